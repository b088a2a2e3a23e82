"""The subscriber's protocol state without sockets: bytes in, messages and events out, bytes to send."""

from __future__ import annotations

import pytest

from shared.redis.subscriber import (
    Dropped,
    Reply,
    Subscribed,
    SubscribeRefused,
    SubscriberState,
    encode_command,
)


def resp(value: object) -> bytes:
    """RESP2 encoding of what Redis would send (bulk strings, integers, arrays, errors as Exception)."""
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)
    if isinstance(value, Exception):
        return b"-%s\r\n" % str(value).encode()
    if value is None:
        return b"$-1\r\n"
    raise TypeError(value)


def ok() -> bytes:
    return b"+OK\r\n"


@pytest.fixture
def received() -> list[bytes]:
    return []


@pytest.fixture
def state(received: list[bytes]) -> SubscriberState:
    return SubscriberState(sharded=False, on_message=received.append)


def test_new_connection_authenticates_then_subscribes_every_wanted_topic(state: SubscriberState) -> None:
    assert state.connection_made() == b""
    state.subscribe(b"t:b")
    state.subscribe(b"t:a")
    sent = state.connection_made("herald", "pw")
    assert sent == encode_command(b"AUTH", "herald", "pw") + encode_command(b"SUBSCRIBE", b"t:a", b"t:b")
    assert state.receive_data(ok())
    assert state.take_events() == [Reply(b"AUTH", b"OK")]
    state.receive_data(resp([b"subscribe", b"t:a", 1]) + resp([b"subscribe", b"t:b", 2]))
    assert state.take_events() == [Subscribed(b"t:a"), Subscribed(b"t:b")]
    assert state.connection_made(None, "pw-only").startswith(encode_command(b"AUTH", "pw-only"))


def test_sharded_topics_resubscribe_one_command_each(received: list[bytes]) -> None:
    """SSUBSCRIBE with several channels must keep to one slot; one per topic is always valid."""
    state = SubscriberState(sharded=True, on_message=received.append)
    state.subscribe(b"t:1")
    state.subscribe(b"t:2")
    assert state.connection_made() == encode_command(b"SSUBSCRIBE", b"t:1") + encode_command(b"SSUBSCRIBE", b"t:2")
    state.receive_data(resp([b"ssubscribe", b"t:1", 1]) + resp([b"smessage", b"t:1", b"hello"]))
    assert received == [b"hello"]
    assert state.take_events() == [Subscribed(b"t:1")]


def test_messages_reach_the_callback_in_order_across_split_reads(
    state: SubscriberState, received: list[bytes]
) -> None:
    state.connection_made()
    assert state.subscribe(b"t:x") == encode_command(b"SUBSCRIBE", b"t:x")
    stream = resp([b"subscribe", b"t:x", 1]) + b"".join(resp([b"message", b"t:x", b"m%d" % i]) for i in range(50))
    found = False
    for i in range(0, len(stream), 7):  # replies cut at every possible place
        found |= state.receive_data(stream[i : i + 7])
    assert found and state.take_events() == [Subscribed(b"t:x")]
    assert received == [b"m%d" % i for i in range(50)]
    # Only messages: nothing to report.
    assert not state.receive_data(resp([b"message", b"t:x", b"last"]))
    assert received[-1] == b"last"


def test_a_refused_subscribe_refuses_each_of_its_topics_and_keeps_the_order(state: SubscriberState) -> None:
    state.subscribe(b"t:a")
    state.subscribe(b"t:b")
    state.connection_made("u", "p")  # AUTH, SUBSCRIBE t:a t:b
    state.subscribe(b"t:c")
    error = Exception("NOPERM this user has no permissions to access one of the channels used as arguments")
    state.receive_data(ok() + resp(error) + resp([b"subscribe", b"t:c", 1]))
    assert state.take_events() == [
        Reply(b"AUTH", b"OK"), SubscribeRefused(b"t:a", str(error)), SubscribeRefused(b"t:b", str(error)),
        Subscribed(b"t:c"),
    ]
    assert state.topics == {b"t:c"}


def test_wrong_credentials_come_back_as_an_error_reply(state: SubscriberState) -> None:
    state.connection_made("herald", "wrong")
    state.receive_data(resp(Exception("WRONGPASS invalid username-password pair or user is disabled.")))
    [reply] = state.take_events()
    assert reply.command == b"AUTH" and reply.error is not None and reply.error.startswith("WRONGPASS")


def test_unsubscribe_confirmations_are_quiet_but_a_server_ended_subscription_is_reported(
    received: list[bytes],
) -> None:
    state = SubscriberState(sharded=True, on_message=received.append)
    state.connection_made()
    state.subscribe(b"t:a")
    state.subscribe(b"t:b")
    assert state.unsubscribe(b"t:a") == encode_command(b"SUNSUBSCRIBE", b"t:a")
    assert state.unsubscribe(b"t:a") == b""  # not wanted any more: nothing to send
    state.receive_data(resp([b"ssubscribe", b"t:a", 1]) + resp([b"ssubscribe", b"t:b", 2])
                       + resp([b"sunsubscribe", b"t:a", 1]))
    assert state.take_events() == [Subscribed(b"t:a"), Subscribed(b"t:b")]
    # Redis Cluster moved t:b's slot away: it ends the subscription on its own.
    assert state.receive_data(resp([b"sunsubscribe", b"t:b", 0]))
    assert state.take_events() == [Dropped(b"t:b")]
    assert state.topics == set()


def test_ping_is_answered_inside_and_outside_a_subscribed_session(state: SubscriberState) -> None:
    state.connection_made()
    assert state.ping() == encode_command(b"PING")
    state.receive_data(b"+PONG\r\n")
    assert state.take_events() == [Reply(b"PING", b"PONG")]
    state.subscribe(b"t:a")
    state.ping()
    state.receive_data(resp([b"subscribe", b"t:a", 1]) + resp([b"pong", b""]))
    assert state.take_events() == [Subscribed(b"t:a"), Reply(b"PING", b"PONG")]


def test_a_new_connection_discards_the_old_ones_partial_reply(
    state: SubscriberState, received: list[bytes]
) -> None:
    state.subscribe(b"t:a")
    state.connection_made()
    state.receive_data(resp([b"subscribe", b"t:a", 1]) + resp([b"message", b"t:a", b"whole"])[:-5])
    state.take_events()
    state.connection_made()  # the old connection died mid-reply
    state.receive_data(resp([b"subscribe", b"t:a", 1]) + resp([b"message", b"t:a", b"next"]))
    assert received == [b"next"]
    assert state.take_events() == [Subscribed(b"t:a")]


def test_an_unexpected_error_is_reported(state: SubscriberState) -> None:
    state.connection_made()
    state.receive_data(resp(Exception("ERR something odd")))
    assert state.take_events() == [Reply(b"", None, "ERR something odd")]
