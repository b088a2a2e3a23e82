"""The protocol 7 state machine (gateway.handler.ProtocolHandler) fed parsed client messages.

No network: each connection writes to a recording sink, the clock is manual, and the handler runs on
the real in-memory backend and a real Hub, so fan-out between connections is exercised too.
Expected behaviour is documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from gateway.connection import Connection
from gateway.hub import Hub
from shared.apps.config import AppConfig
from shared.bus.base import BusUnavailable, Envelope
from shared.bus.memory_impl import MemoryBus
from shared.protocol import codes, messages
from shared.protocol.signatures import sign_channel
from shared.state.base import Member
from tests.unit.fakes import (
    VECTOR_KEY,
    VECTOR_SECRET,
    VECTOR_SOCKET,
    Client,
    FailingCall,
    Gate,
    GatedOccupancy,
    Harness,
    ListSink,
    decode,
    make_app,
    settle,
    vector_app,
)

PRIVATE_VECTOR_AUTH = f"{VECTOR_KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
PRESENCE_VECTOR_DATA = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
PRESENCE_VECTOR_AUTH = f"{VECTOR_KEY}:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"

CLIENT_APP = make_app(id="client-app", key="client-key", secret="client-secret", enable_client_messages=True)


# -- helpers -----------------------------------------------------------------------------------


def succeeded(channel: str, data: str = "{}") -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}


def only_subscription_error(client: Client, channel: str) -> dict[str, Any]:
    """The single frame the client got must be a subscription error on `channel`; returns its data."""
    frames = client.sink.take()
    assert len(frames) == 1, frames
    frame = frames[0]
    assert frame["event"] == "pusher:subscription_error"
    assert frame["channel"] == channel
    data = frame["data"]
    assert isinstance(data, dict)
    assert set(data) == {"type", "error", "status"}
    assert isinstance(data["error"], str) and data["error"]
    return data


def only_error(client: Client) -> dict[str, Any]:
    """The single frame the client got must be a `pusher:error`; returns its data object."""
    frames = client.sink.take()
    assert len(frames) == 1, frames
    frame = frames[0]
    assert frame["event"] == "pusher:error"
    assert "channel" not in frame
    data = frame["data"]
    assert isinstance(data, dict)
    assert isinstance(data["message"], str) and data["message"]
    return data


async def occupancy(h: Harness, app: AppConfig, channel: str) -> int:
    return (await h.backend.occupancy.counts(app.id, [channel]))[0]


async def assert_not_subscribed(h: Harness, client: Client, channel: str) -> None:
    assert channel not in client.conn.channels
    assert channel not in client.conn.held
    assert h.hub.local_count(client.conn.app.id, channel) == 0
    assert await occupancy(h, client.conn.app, channel) == 0
    assert not client.sink.closed


def presence_data(user_id: Any, user_info: Any = None) -> str:
    payload: dict[str, Any] = {"user_id": user_id}
    if user_info is not None:
        payload["user_info"] = user_info
    return orjson.dumps(payload).decode()


async def join_presence(client: Client, channel: str, user_id: Any, user_info: Any = None) -> None:
    app = client.conn.app
    channel_data = presence_data(user_id, user_info)
    auth = sign_channel(app.key, app.secret, client.socket_id, channel, channel_data)
    await client.subscribe(channel, auth, channel_data)


async def join_private(client: Client, channel: str) -> None:
    app = client.conn.app
    await client.subscribe(channel, sign_channel(app.key, app.secret, client.socket_id, channel))


def roster(frame: dict[str, Any]) -> dict[str, Any]:
    assert frame["event"] == "pusher_internal:subscription_succeeded"
    assert isinstance(frame["data"], str)
    decoded = decode(frame["data"])
    assert set(decoded) == {"presence"}
    presence: dict[str, Any] = decoded["presence"]
    assert set(presence) == {"ids", "hash", "count"}
    # ids and hash keys name the same users (docs/protocol.md).
    assert sorted(str(i) for i in presence["ids"]) == sorted(presence["hash"])
    assert presence["count"] == len(presence["ids"])
    return presence


# -- ping / pong -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"event": "pusher:ping", "data": {}},
        {"event": "pusher:ping", "data": "{}"},
        {"event": "pusher:ping"},
        '{"event":"pusher:ping","data":""}',
    ],
    ids=["object-data", "string-data", "no-data", "empty-string-data"],
)
async def test_ping_gets_pong(harness: Harness, message: Any) -> None:
    client = harness.connect(make_app())
    await client.send(message)
    assert client.sink.take() == [{"event": "pusher:pong", "data": "{}"}]


async def test_pong_is_silent_activity(harness: Harness) -> None:
    client = harness.connect(make_app())
    client.conn.ping_sent_at = harness.clock()
    harness.clock.advance(5)
    await client.send({"event": "pusher:pong", "data": {}})
    assert client.sink.frames == []
    assert client.conn.ping_sent_at is None
    assert client.conn.last_seen == harness.clock()


async def test_any_message_counts_as_activity(harness: Harness) -> None:
    client = harness.connect(make_app())
    client.conn.ping_sent_at = harness.clock()
    harness.clock.advance(7)
    await client.send("not json at all")
    assert client.conn.ping_sent_at is None
    assert client.conn.last_seen == harness.clock()


# -- public channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["", None, "anything:at-all"], ids=["empty", "absent", "ignored"])
async def test_subscribe_public(harness: Harness, auth: str | None) -> None:
    app = make_app()
    client = harness.connect(app)
    await client.subscribe("my-channel", auth)
    assert client.sink.take() == [succeeded("my-channel")]
    assert client.conn.channels == {"my-channel": None}
    assert client.conn.held == {}
    assert harness.hub.local_count(app.id, "my-channel") == 1
    assert await occupancy(harness, app, "my-channel") == 1


async def test_subscribe_with_data_as_json_string(harness: Harness) -> None:
    client = harness.connect(make_app())
    await client.send({"event": "pusher:subscribe", "data": '{"channel":"my-channel","auth":""}'})
    assert client.sink.take() == [succeeded("my-channel")]
    assert "my-channel" in client.conn.channels


async def test_public_cache_channel_subscribes(harness: Harness) -> None:
    client = harness.connect(make_app())
    await client.subscribe("cache-news")
    assert client.sink.events()[0] == "pusher_internal:subscription_succeeded"


async def test_unsubscribe_is_silent_and_stops_delivery(harness: Harness) -> None:
    app = make_app()
    client = harness.connect(app)
    await client.subscribe("my-channel")
    client.sink.take()
    await client.unsubscribe("my-channel")
    assert client.sink.frames == []
    assert client.conn.channels == {}
    assert harness.hub.local_count(app.id, "my-channel") == 0
    assert await occupancy(harness, app, "my-channel") == 0
    await harness.backend.bus.publish(Envelope(app.id, "my-channel", "late", "{}"))
    assert client.sink.frames == []


async def test_unsubscribe_unknown_channel_is_a_silent_no_op(harness: Harness) -> None:
    client = harness.connect(make_app())
    await client.subscribe("a")
    client.sink.take()
    await client.unsubscribe("never-subscribed")
    await client.send({"event": "pusher:unsubscribe", "data": '{"channel":"also-unknown"}'})
    assert client.sink.frames == []
    assert client.conn.channels == {"a": None}
    assert not client.sink.closed


async def test_application_events_reach_every_subscriber_except_the_excluded(harness: Harness) -> None:
    app = make_app()
    a, b, c = harness.connect(app), harness.connect(app), harness.connect(app)
    for client in (a, b):
        await client.subscribe("news")
        client.sink.take()
    data = '{ "hello" : "wörld" }'
    await harness.backend.bus.publish(Envelope(app.id, "news", "my-event", data, exclude=b.socket_id))
    assert a.sink.take() == [{"event": "my-event", "channel": "news", "data": data}]
    assert b.sink.frames == []
    assert c.sink.frames == []


async def test_resubscribe_is_idempotent(harness: Harness) -> None:
    app = make_app()
    client = harness.connect(app)
    await client.subscribe("my-channel")
    await client.subscribe("my-channel")
    assert client.sink.take() == [succeeded("my-channel"), succeeded("my-channel")]
    assert await occupancy(harness, app, "my-channel") == 1
    await harness.backend.bus.publish(Envelope(app.id, "my-channel", "once", "{}"))
    assert client.sink.events() == ["once"]
    await client.unsubscribe("my-channel")
    assert await occupancy(harness, app, "my-channel") == 0


# -- private channels --------------------------------------------------------------------------


async def test_private_reference_vector(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    await client.subscribe("private-foobar", PRIVATE_VECTOR_AUTH)
    assert client.sink.take() == [succeeded("private-foobar")]
    assert client.conn.channels == {"private-foobar": None}


@pytest.mark.parametrize(
    "auth",
    [
        f"{VECTOR_KEY}:{'0' * 64}",  # wrong signature
        PRIVATE_VECTOR_AUTH.replace(VECTOR_KEY, "wrong-key"),  # wrong key, right signature
        None,  # missing
        "",  # empty
        "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",  # no key part
        f"{VECTOR_KEY}:",  # no signature part
        42,  # not a string
    ],
    ids=["wrong-signature", "wrong-key", "missing", "empty", "no-key", "no-signature", "not-a-string"],
)
async def test_private_auth_failures(harness: Harness, auth: Any) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    data: dict[str, Any] = {"channel": "private-foobar"}
    if auth is not None:
        data["auth"] = auth
    await client.send({"event": "pusher:subscribe", "data": data})
    error = only_subscription_error(client, "private-foobar")
    assert (error["type"], error["status"]) == ("AuthError", 401)
    await assert_not_subscribed(harness, client, "private-foobar")


async def test_private_signature_is_bound_to_the_socket(harness: Harness) -> None:
    client = harness.connect(vector_app(), "1234.1235")
    await client.subscribe("private-foobar", PRIVATE_VECTOR_AUTH)
    assert only_subscription_error(client, "private-foobar")["type"] == "AuthError"
    await assert_not_subscribed(harness, client, "private-foobar")


async def test_private_with_channel_data_signs_it_as_third_part(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    channel_data = '{"user_id":"42"}'
    auth = sign_channel(VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET, "private-foobar", channel_data)
    await client.subscribe("private-foobar", auth, channel_data)
    assert client.sink.take() == [succeeded("private-foobar")]
    # channel_data is not a presence membership on a private channel.
    assert client.conn.channels == {"private-foobar": None}


async def test_private_with_channel_data_but_two_part_signature_is_refused(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    await client.subscribe("private-foobar", PRIVATE_VECTOR_AUTH, '{"user_id":"42"}')
    assert only_subscription_error(client, "private-foobar")["status"] == 401
    await assert_not_subscribed(harness, client, "private-foobar")


async def test_channel_data_must_be_a_string(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    await client.send({"event": "pusher:subscribe", "data": {
        "channel": "presence-foobar", "auth": PRESENCE_VECTOR_AUTH, "channel_data": {"user_id": 10},
    }})
    assert only_subscription_error(client, "presence-foobar")["type"] == "AuthError"
    await assert_not_subscribed(harness, client, "presence-foobar")


async def test_encrypted_channel_authorizes_like_private(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    await join_private(client, "private-encrypted-foo")
    assert client.sink.take() == [succeeded("private-encrypted-foo")]
    await client.subscribe("private-encrypted-bar", "")
    assert only_subscription_error(client, "private-encrypted-bar")["type"] == "AuthError"


async def test_private_cache_channel_needs_auth(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    await client.subscribe("private-cache-x", "")
    assert only_subscription_error(client, "private-cache-x")["status"] == 401


# -- presence channels -------------------------------------------------------------------------


async def test_presence_reference_vector_roster(harness: Harness) -> None:
    app = vector_app()
    client = harness.connect(app, VECTOR_SOCKET)
    await client.subscribe("presence-foobar", PRESENCE_VECTOR_AUTH, PRESENCE_VECTOR_DATA)
    frames = client.sink.take()
    assert len(frames) == 1  # no member_added to oneself
    presence = roster(frames[0])
    assert presence == {"ids": [10], "hash": {"10": {"name": "Mr. Channels"}}, "count": 1}
    assert isinstance(presence["ids"][0], int)  # the number is kept as sent (docs/protocol.md, "Users")
    assert client.conn.channels == {"presence-foobar": Member(10, {"name": "Mr. Channels"})}
    assert await occupancy(harness, app, "presence-foobar") == 1


async def test_presence_second_user_and_second_tab(harness: Harness) -> None:
    app = vector_app()
    first = harness.connect(app, VECTOR_SOCKET)
    await first.subscribe("presence-foobar", PRESENCE_VECTOR_AUTH, PRESENCE_VECTOR_DATA)
    first.sink.take()

    second = harness.connect(app, "5.6")
    await join_presence(second, "presence-foobar", "11", {"name": "Two"})
    # The first member is told, with data as a JSON string.
    added = first.sink.take()
    assert added == [{
        "event": "pusher_internal:member_added",
        "channel": "presence-foobar",
        "data": '{"user_id":"11","user_info":{"name":"Two"}}',
    }]
    frames = second.sink.take()
    assert len(frames) == 1
    presence = roster(frames[0])
    assert presence["count"] == 2
    assert presence["ids"] == [10, "11"]
    assert presence["hash"] == {"10": {"name": "Mr. Channels"}, "11": {"name": "Two"}}

    # Another tab of user 10 (given as the string "10": one user by string form): no member_added.
    tab = harness.connect(app, "7.8")
    await join_presence(tab, "presence-foobar", "10", {"name": "Mr. Channels"})
    assert first.sink.frames == [] and second.sink.frames == []
    assert roster(tab.sink.take()[0])["count"] == 2
    assert await occupancy(harness, app, "presence-foobar") == 3
    assert await harness.backend.presence.user_counts(app.id, ["presence-foobar"]) == [2]

    # Closing one of user 10's two tabs is silent; the last one leaving is announced.
    await tab.unsubscribe("presence-foobar")
    assert first.sink.frames == [] and second.sink.frames == []
    await first.unsubscribe("presence-foobar")
    assert second.sink.take() == [{
        "event": "pusher_internal:member_removed",
        "channel": "presence-foobar",
        "data": '{"user_id":10}',
    }]
    assert first.sink.frames == []
    assert await harness.backend.presence.user_counts(app.id, ["presence-foobar"]) == [1]


async def test_presence_user_info_is_optional(harness: Harness) -> None:
    a, b = harness.connect(make_app()), harness.connect(make_app())
    await join_presence(a, "presence-r", "a")
    assert roster(a.sink.take()[0]) == {"ids": ["a"], "hash": {"a": None}, "count": 1}
    await join_presence(b, "presence-r", "b")
    assert decode(a.sink.take()[0]["data"]) == {"user_id": "b", "user_info": None}


async def test_presence_resubscribe_does_not_duplicate_membership(harness: Harness) -> None:
    app = make_app()
    watcher, client = harness.connect(app), harness.connect(app)
    await join_presence(watcher, "presence-r", "w")
    await join_presence(client, "presence-r", "c", {"n": 1})
    watcher.sink.take()
    await join_presence(client, "presence-r", "c", {"n": 1})
    frames = client.sink.take()
    assert [roster(f)["count"] for f in frames] == [2, 2]
    assert watcher.sink.frames == []  # no second member_added
    assert await occupancy(harness, app, "presence-r") == 2
    await client.unsubscribe("presence-r")
    assert watcher.sink.events() == ["pusher_internal:member_removed"]
    assert await occupancy(harness, app, "presence-r") == 1


async def test_presence_channel_full(harness: Harness) -> None:
    app = make_app(max_presence_members_per_channel=2)
    a, b, c, a2 = (harness.connect(app) for _ in range(4))
    await join_presence(a, "presence-r", "a")
    await join_presence(b, "presence-r", "b")
    a.sink.take()
    await join_presence(c, "presence-r", "c")
    error = only_subscription_error(c, "presence-r")
    assert (error["type"], error["status"]) == ("LimitReached", 4100)
    await assert_not_subscribed_in_full_channel(harness, c, "presence-r")
    assert a.sink.frames == []  # nobody hears about the refused user
    # A further connection of a user who is already a member is not a new member.
    await join_presence(a2, "presence-r", "a")
    assert roster(a2.sink.take()[0])["count"] == 2


async def assert_not_subscribed_in_full_channel(h: Harness, client: Client, channel: str) -> None:
    assert channel not in client.conn.channels
    assert channel not in client.conn.held
    assert client.socket_id not in {c.socket_id for c in _hub_members(h.hub, client.conn.app.id, channel)}
    members = await h.backend.presence.members(client.conn.app.id, channel)
    assert all(m.user_id != "c" for m in members)


def _hub_members(hub: Hub, app_id: str, channel: str) -> list[Connection]:
    return list(hub._members.get((app_id, channel), {}).values())


async def test_presence_user_info_size_limit(harness: Harness) -> None:
    app = make_app(max_presence_member_size_in_kb=1)
    ok, big = harness.connect(app), harness.connect(app)
    overhead = len(orjson.dumps({"x": ""}))
    at_limit = {"x": "a" * (1024 - overhead)}
    assert len(orjson.dumps(at_limit)) == 1024
    await join_presence(ok, "presence-r", "ok", at_limit)
    assert roster(ok.sink.take()[0])["count"] == 1
    await join_presence(big, "presence-r", "big", {"x": "a" * (1025 - overhead)})
    error = only_subscription_error(big, "presence-r")
    assert (error["type"], error["status"]) == ("LimitReached", 413)
    assert "big" not in str(await harness.backend.presence.members(app.id, "presence-r"))


async def test_presence_user_id_length_limit(harness: Harness) -> None:
    app = make_app()
    ok, long_ = harness.connect(app), harness.connect(app)
    await join_presence(ok, "presence-r", "u" * 128)
    assert roster(ok.sink.take()[0])["count"] == 1
    await join_presence(long_, "presence-r", "u" * 129)
    error = only_subscription_error(long_, "presence-r")
    assert (error["type"], error["status"]) == ("LimitReached", 413)


@pytest.mark.parametrize(
    "channel_data",
    [None, "not json", "[10]", '{"user_info":{}}', '{"user_id":null}', '{"user_id":true}',
     '{"user_id":""}', '{"user_id":{"a":1}}', '{"user_id":[1]}'],
    ids=["missing", "not-json", "not-object", "no-user-id", "null", "bool", "empty", "object", "list"],
)
async def test_presence_bad_channel_data(harness: Harness, channel_data: str | None) -> None:
    app = make_app()
    client = harness.connect(app)
    auth = sign_channel(app.key, app.secret, client.socket_id, "presence-r", channel_data)
    await client.subscribe("presence-r", auth, channel_data)
    error = only_subscription_error(client, "presence-r")
    assert (error["type"], error["status"]) == ("AuthError", 401)
    await assert_not_subscribed(harness, client, "presence-r")


async def test_presence_bad_signature(harness: Harness) -> None:
    client = harness.connect(vector_app(), VECTOR_SOCKET)
    tampered = PRESENCE_VECTOR_DATA.replace("Mr. Channels", "Mr. Pusher")
    await client.subscribe("presence-foobar", PRESENCE_VECTOR_AUTH, tampered)
    assert only_subscription_error(client, "presence-foobar")["type"] == "AuthError"
    await assert_not_subscribed(harness, client, "presence-foobar")


# -- channel names -----------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["with space", "star*", "colon:x", "unicodé", "#foo", "#", "a#b"])
async def test_invalid_channel_names(harness: Harness, channel: str) -> None:
    client = harness.connect(make_app())
    await client.subscribe(channel)
    error = only_subscription_error(client, channel)
    assert error["type"] == "InvalidChannel"
    await assert_not_subscribed(harness, client, channel)


async def test_channel_name_too_long(harness: Harness) -> None:
    app = make_app(max_channel_name_length=20)
    client = harness.connect(app)
    await client.subscribe("x" * 20)
    assert client.sink.take() == [succeeded("x" * 20)]
    await client.subscribe("x" * 21)
    error = only_subscription_error(client, "x" * 21)
    assert error["type"] == "LimitReached"
    await assert_not_subscribed(harness, client, "x" * 21)


async def test_channel_name_default_limit_is_200(harness: Harness) -> None:
    client = harness.connect(make_app())
    await client.subscribe("p" * 200)
    assert client.sink.events() == ["pusher_internal:subscription_succeeded"]
    client.sink.take()
    await client.subscribe("p" * 201)
    assert only_subscription_error(client, "p" * 201)["type"] == "LimitReached"


async def test_server_to_user_channel_needs_signin(harness: Harness) -> None:
    client = harness.connect(make_app())
    await client.subscribe("#server-to-user-12345")
    error = only_subscription_error(client, "#server-to-user-12345")
    assert (error["type"], error["status"]) == ("AuthError", 401)
    await assert_not_subscribed(harness, client, "#server-to-user-12345")


# -- client events -----------------------------------------------------------------------------


async def two_in(h: Harness, channel: str, app: AppConfig = CLIENT_APP) -> tuple[Client, Client]:
    sender, receiver = h.connect(app), h.connect(app)
    for i, client in enumerate((sender, receiver)):
        if channel.startswith("presence-"):
            await join_presence(client, channel, 100 + i, {"i": i})
        elif channel.startswith("private-"):
            await join_private(client, channel)
        else:
            await client.subscribe(channel)
        client.sink.take()
    sender.sink.take()
    receiver.sink.take()
    return sender, receiver


async def test_client_event_on_private_channel(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "private-chat")
    await sender.trigger("client-typing", "private-chat", {"text": "hi"})
    assert receiver.sink.take() == [{"event": "client-typing", "channel": "private-chat", "data": {"text": "hi"}}]
    assert sender.sink.frames == []  # never echoed to the sender


async def test_client_event_string_data_is_relayed_as_is(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "private-chat")
    await sender.send({"event": "client-x", "channel": "private-chat", "data": '{"a": 1}'})
    assert receiver.sink.take() == [{"event": "client-x", "channel": "private-chat", "data": '{"a": 1}'}]


async def test_client_event_on_presence_channel_carries_user_id(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "presence-room")
    await sender.trigger("client-typing", "presence-room", {"t": 1})
    assert receiver.sink.take() == [
        {"event": "client-typing", "channel": "presence-room", "data": {"t": 1}, "user_id": 100}
    ]
    assert sender.sink.frames == []


async def test_client_events_disabled_for_app(harness: Harness) -> None:
    app = make_app(enable_client_messages=False)
    sender, receiver = await two_in(harness, "private-chat", app)
    await sender.trigger("client-typing", "private-chat")
    assert only_error(sender)["code"] == 4301
    assert receiver.sink.frames == []


@pytest.mark.parametrize(
    "channel", ["public-chat", "cache-chat", "private-encrypted-chat"], ids=["public", "cache", "encrypted"]
)
async def test_client_events_rejected_on_channel_type(harness: Harness, channel: str) -> None:
    sender, receiver = await two_in(harness, channel)
    assert channel in sender.conn.channels
    await sender.trigger("client-typing", channel)
    assert only_error(sender)["code"] == 4301
    assert receiver.sink.frames == []


async def test_client_event_from_non_subscriber_rejected(harness: Harness) -> None:
    _, receiver = await two_in(harness, "private-chat")
    outsider = harness.connect(CLIENT_APP)
    await outsider.trigger("client-typing", "private-chat")
    assert only_error(outsider)["code"] == 4301
    assert receiver.sink.frames == []


async def test_client_event_without_channel_rejected(harness: Harness) -> None:
    sender, _ = await two_in(harness, "private-chat")
    await sender.send({"event": "client-typing", "data": {}})
    assert only_error(sender)["code"] == 4301


async def test_client_event_limits(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "private-chat")
    await sender.send({"event": "client-" + "x" * 200, "channel": "private-chat", "data": {}})
    assert only_error(sender)["code"] == 4301
    await sender.send({"event": "client-big", "channel": "private-chat", "data": "x" * (10 * 1024 + 1)})
    assert only_error(sender)["code"] == 4301
    await sender.send({"event": "client-fits", "channel": "private-chat", "data": "x" * (10 * 1024)})
    assert sender.sink.frames == []
    assert receiver.sink.events() == ["client-fits"]


async def test_client_event_rate_limit(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "private-chat")
    for i in range(10):
        await sender.trigger("client-n", "private-chat", {"i": i})
    assert sender.sink.frames == []
    harness.clock.advance(0.5)
    await sender.trigger("client-n", "private-chat", {"i": 10})
    error = only_error(sender)
    assert error["code"] == 4301
    assert not sender.sink.closed  # an error event, never a close
    assert len(receiver.sink.take()) == 10
    harness.clock.advance(1)
    await sender.trigger("client-n", "private-chat", {"i": 11})
    assert sender.sink.frames == []
    assert receiver.sink.take() == [{"event": "client-n", "channel": "private-chat", "data": {"i": 11}}]


async def test_client_event_bus_unavailable_is_an_error_event(harness: Harness) -> None:
    sender, receiver = await two_in(harness, "private-chat")
    harness.backend.bus = FailingCall(harness.backend.bus, "publish", BusUnavailable("down"))
    await sender.trigger("client-typing", "private-chat")
    assert only_error(sender)["code"] == codes.RECONNECT
    assert not sender.sink.closed
    assert receiver.sink.frames == []


# -- held-back delivery while a subscription is pending ----------------------------------------


async def test_hub_holds_events_until_release() -> None:
    bus = MemoryBus()
    hub = Hub(bus)
    sink = ListSink()
    conn = Connection("1.1", make_app(), sink, 0.0)
    await hub.join(conn, "news")
    assert conn.held == {"news": []}
    await bus.publish(Envelope("app-1", "news", "early", '"1"'))
    assert sink.frames == []
    assert len(conn.held["news"]) == 1
    conn.send(messages.subscription_succeeded("news"))
    conn.release("news")
    assert conn.held == {}
    await bus.publish(Envelope("app-1", "news", "later", '"2"'))
    assert sink.events() == ["pusher_internal:subscription_succeeded", "early", "later"]
    await hub.leave(conn, "news")
    await bus.publish(Envelope("app-1", "news", "gone", '"3"'))
    assert sink.events()[-1] == "later"
    assert hub.topics() == []


async def test_events_published_while_pending_arrive_after_confirmation(harness: Harness) -> None:
    app = make_app()
    gate = Gate()
    harness.backend.occupancy = GatedOccupancy(harness.backend.occupancy, gate)
    client = harness.connect(app)
    task = asyncio.create_task(client.subscribe("news"))
    await gate.entered.wait()
    # The hub is subscribed (the bus delivers), but the client has no confirmation yet.
    await harness.backend.bus.publish(Envelope(app.id, "news", "e1", '"1"'))
    await harness.backend.bus.publish(Envelope(app.id, "news", "e2", '"2"'))
    # A duplicate subscribe while pending is answered by the pending one.
    await client.subscribe("news")
    assert client.sink.frames == []
    gate.open()
    await task
    assert client.sink.take() == [
        succeeded("news"),
        {"event": "e1", "channel": "news", "data": '"1"'},
        {"event": "e2", "channel": "news", "data": '"2"'},
    ]
    assert client.conn.held == {}
    await harness.backend.bus.publish(Envelope(app.id, "news", "e3", '"3"'))
    assert client.sink.events() == ["e3"]


async def test_a_cache_channel_event_published_while_pending_arrives_once(harness: Harness) -> None:
    app = make_app()
    gate = Gate()
    harness.backend.occupancy = GatedOccupancy(harness.backend.occupancy, gate)
    client = harness.connect(app)
    task = asyncio.create_task(client.subscribe("cache-news"))
    await gate.entered.wait()
    # Published as the HTTP API does: cached first, then sent on the bus (held for the pending socket).
    await harness.backend.cache.put(app.id, "cache-news", "update", '"1"', 60)
    await harness.backend.bus.publish(Envelope(app.id, "cache-news", "update", '"1"'))
    gate.open()
    await task
    assert client.sink.take() == [succeeded("cache-news"), {"event": "update", "channel": "cache-news", "data": '"1"'}]


async def test_close_while_pending_undoes_the_subscription(harness: Harness) -> None:
    app = make_app()
    gate = Gate()
    harness.backend.occupancy = GatedOccupancy(harness.backend.occupancy, gate)
    client = harness.connect(app)
    task = asyncio.create_task(client.subscribe("news"))
    await gate.entered.wait()
    await client.close()
    gate.open()
    await task
    await settle()
    assert client.sink.frames == []
    assert client.conn.channels == {}
    assert harness.hub.local_count(app.id, "news") == 0
    assert await occupancy(harness, app, "news") == 0
    assert harness.hub.topics() == []


# -- close ---------------------------------------------------------------------------------------


async def test_close_leaves_every_channel(harness: Harness) -> None:
    app = make_app()
    leaving, staying = harness.connect(app), harness.connect(app)
    await join_presence(leaving, "presence-r", 1, {"n": "one"})
    await join_presence(staying, "presence-r", 2, {"n": "two"})
    await leaving.subscribe("news")
    await join_private(leaving, "private-x")
    await staying.subscribe("news")
    staying.sink.take()
    assert await harness.backend.occupancy.counts(app.id, ["presence-r", "news", "private-x"]) == [2, 2, 1]

    await leaving.close()
    assert leaving.conn.closed
    assert leaving.conn.channels == {}
    assert staying.sink.take() == [
        {"event": "pusher_internal:member_removed", "channel": "presence-r", "data": '{"user_id":1}'}
    ]
    assert await harness.backend.occupancy.counts(app.id, ["presence-r", "news", "private-x"]) == [1, 1, 0]
    assert await harness.backend.presence.members(app.id, "presence-r") == [Member(2, {"n": "two"})]
    assert harness.hub.local_count(app.id, "private-x") == 0


async def test_close_of_one_tab_keeps_the_member(harness: Harness) -> None:
    app = make_app()
    tab1, tab2, other = (harness.connect(app) for _ in range(3))
    for client, user in ((tab1, "u"), (tab2, "u"), (other, "o")):
        await join_presence(client, "presence-r", user)
    other.sink.take()
    await tab1.close()
    assert other.sink.frames == []
    await tab2.close()
    assert other.sink.events() == ["pusher_internal:member_removed"]


async def test_close_continues_after_a_store_failure(harness: Harness) -> None:
    app = make_app()
    client = harness.connect(app)
    await client.subscribe("a")
    await client.subscribe("b")
    real = harness.backend.occupancy
    harness.backend.occupancy = FailingCall(real, "remove", ConnectionError("redis down"))
    await client.close()  # must not raise
    assert client.conn.channels == {}
    assert harness.hub.topics() == []


# -- server-side failures ----------------------------------------------------------------------


async def test_store_failure_during_subscribe_is_a_server_error(harness: Harness) -> None:
    app = make_app()
    client = harness.connect(app)
    real = harness.backend.occupancy
    harness.backend.occupancy = FailingCall(real, "add", ConnectionError("redis down"))
    await client.subscribe("news")
    error = only_subscription_error(client, "news")
    assert error["type"] == "ServerError"
    assert client.conn.channels == {}
    assert harness.hub.topics() == []
    harness.backend.occupancy = real
    await client.subscribe("news")
    assert client.sink.take() == [succeeded("news")]


async def test_store_failure_during_presence_subscribe_leaves_no_member(harness: Harness) -> None:
    app = make_app()
    client, watcher = harness.connect(app), harness.connect(app)
    real = harness.backend.occupancy
    harness.backend.occupancy = FailingCall(real, "add", ConnectionError("redis down"))
    await join_presence(client, "presence-r", "ghost")
    assert only_subscription_error(client, "presence-r")["type"] == "ServerError"
    # The failed subscription must not leave the user in the roster.
    assert await harness.backend.presence.members(app.id, "presence-r") == []
    harness.backend.occupancy = real
    await join_presence(watcher, "presence-r", "w")
    assert roster(watcher.sink.take()[0])["ids"] == ["w"]


async def test_bus_failure_during_subscribe_is_a_server_error(harness: Harness) -> None:
    app = make_app()
    client = harness.connect(app)
    harness.hub.bus = FailingCall(harness.hub.bus, "subscribe", BusUnavailable("down"))
    await client.subscribe("news")
    assert only_subscription_error(client, "news")["type"] == "ServerError"
    assert client.conn.held == {}
    assert harness.hub.topics() == []


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        "",
        b"\xff\xfe{}",
        "[" * 5000 + "]" * 5000,
        "[1, 2]",
        '"pusher:ping"',
        "42",
        "null",
        "{}",
        '{"event": 5}',
        '{"event": ""}',
        '{"event": null}',
        '{"data": {}}',
        '{"event": "pusher:subscribe", "data": "not json"}',
        '{"event": "pusher:ping", "data": "{"}',
        '{"event": "pusher:subscribe"}',
        '{"event": "pusher:subscribe", "data": {}}',
        '{"event": "pusher:subscribe", "data": "[1]"}',
        '{"event": "pusher:subscribe", "data": "\\"private-x\\""}',
        '{"event": "pusher:subscribe", "data": {"channel": ""}}',
        '{"event": "pusher:subscribe", "data": {"channel": 5}}',
        '{"event": "pusher:subscribe", "data": {"channel": ["a"]}}',
        '{"event": "pusher:subscribe", "data": {"auth": ""}}',
        '{"event": "pusher:unsubscribe", "data": {}}',
        '{"event": "pusher:unsubscribe"}',
        '{"event": "pusher:unsubscribe", "data": {"channel": null}}',
        '{"event": "pusher:whatever", "data": {}}',
        '{"event": "pusher_internal:member_added", "channel": "presence-x", "data": "{}"}',
        '{"event": "my-event", "channel": "x", "data": "{}"}',
    ],
)
async def test_malformed_input_gets_error_4200(harness: Harness, text: str | bytes) -> None:
    client = harness.connect(make_app())
    await client.send(text)
    assert only_error(client)["code"] == 4200
    assert not client.sink.closed
    assert client.conn.channels == {}
    # The connection still works afterwards.
    await client.send({"event": "pusher:ping", "data": {}})
    assert client.sink.events() == ["pusher:pong"]


async def test_binary_frame_gets_error_4200(harness: Harness) -> None:
    client = harness.connect(make_app())
    harness.clock.advance(3)
    harness.handler.handle_binary(client.conn)
    assert only_error(client)["code"] == 4200
    assert client.conn.last_seen == harness.clock()
    assert not client.sink.closed


async def test_odd_but_valid_json_never_raises(harness: Harness) -> None:
    app = make_app(enable_client_messages=True)
    client = harness.connect(app)
    odd: list[Any] = [
        {"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": {"k": 1}}},
        {"event": "pusher:subscribe", "data": {"channel": "presence-x", "auth": "a:b", "channel_data": 7}},
        {"event": "pusher:subscribe", "data": {"channel": "x" * 10_000}},
        {"event": "pusher:subscribe", "data": {"channel": "ok", "extra": [1, {"a": None}]}},
        {"event": "pusher:ping", "data": [1, 2, 3]},
        {"event": "pusher:ping", "data": None},
        {"event": "client-x", "channel": 5, "data": {}},
        {"event": "client-x", "channel": None},
        {"event": "client-x", "channel": "private-x", "data": 1e308},
        {"event": "x" * 100_000},
        {"event": "pusher:subscribe", "data": {"channel": "\u0000"}},
    ]
    for message in odd:
        await client.send(message)
    assert client.sink.frames, "the messages above get replies"
    # Each is answered as a client mistake, none hits the handler's catch-all for internal errors.
    messages = [f["data"].get("message") for f in client.sink.frames if isinstance(f.get("data"), dict)]
    assert "Internal server error" not in messages
    assert not client.sink.closed


async def test_seeded_fuzz_never_raises_or_closes(harness: Harness) -> None:
    """Valid protocol traffic mixed with random well-formed JSON of every shape: only client-error
    replies, no closes, and once everyone has gone every store and the hub are empty."""
    rng = random.Random(20240607)
    app = make_app(enable_client_messages=True, max_presence_members_per_channel=3)
    clients = [harness.connect(app) for _ in range(4)]
    everyone = list(clients)
    events = ["pusher:ping", "pusher:pong", "pusher:subscribe", "pusher:unsubscribe", "pusher:signin",
              "client-x", "pusher:nope", "other", "", None, 7]
    channels = ["pub", "private-a", "presence-a", "private-encrypted-a", "cache-a", "#server-to-user-1",
                "bad name", "", None, 5, "x" * 300]

    def value(depth: int = 0) -> Any:
        kind = rng.randrange(8 if depth < 2 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False, 0, -1, 1.5, 1e30])
        if kind == 2:
            return rng.choice(["", "{}", "[]", "not json", '{"channel":"pub"}', '{"user_id":1}'])
        if kind == 3:
            return rng.choice(channels)
        if kind == 4:
            return "é" * rng.randrange(3)
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(3))]
        return {k: value(depth + 1) for k in rng.sample(["channel", "auth", "channel_data", "user_data", "x"], 3)}

    def valid(client: Client) -> dict[str, Any]:
        channel = rng.choice(["pub", "private-a", "presence-a", "presence-b"])
        kind = rng.randrange(3)
        if kind == 0:
            channel_data = presence_data(rng.randrange(6), {"r": rng.random()}) if "presence" in channel else None
            auth = sign_channel(app.key, app.secret, client.socket_id, channel, channel_data)
            return {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth,
                                                          "channel_data": channel_data}}
        if kind == 1:
            return {"event": "pusher:unsubscribe", "data": {"channel": channel}}
        return {"event": "client-x", "channel": channel, "data": value()}

    # Each client's idea of every presence roster, kept the way pusher-js keeps it (Members).
    views: dict[str, dict[str, set[str]]] = {}
    read: dict[str, int] = {}

    def follow(client: Client) -> dict[str, set[str]]:
        view = views.setdefault(client.socket_id, {})
        frames = client.sink.frames[read.get(client.socket_id, 0):]
        read[client.socket_id] = len(client.sink.frames)
        for f in frames:
            channel, event = f.get("channel"), f["event"]
            if not isinstance(channel, str) or not channel.startswith("presence-"):
                continue
            if event == "pusher_internal:subscription_succeeded":
                view[channel] = set(decode(f["data"])["presence"]["hash"])
            elif event == "pusher_internal:member_added":
                view.setdefault(channel, set()).add(str(decode(f["data"])["user_id"]))
            elif event == "pusher_internal:member_removed":
                view.setdefault(channel, set()).discard(str(decode(f["data"])["user_id"]))
        return view

    async def check_state() -> None:
        """The shared state agrees with what the connections believe."""
        for client in clients:
            view = follow(client)
            for channel in ("presence-a", "presence-b"):
                if channel in client.conn.channels:
                    keys = {m.key for m in await harness.backend.presence.members(app.id, channel)}
                    assert view.get(channel) == keys, (client.socket_id, channel)
        for channel in ("pub", "private-a", "presence-a", "presence-b"):
            inside = [c for c in clients if channel in c.conn.channels]
            assert await occupancy(harness, app, channel) == len(inside)
            assert harness.hub.local_count(app.id, channel) == len(inside)
            if channel.startswith("presence-"):
                keys = {m.key for m in await harness.backend.presence.members(app.id, channel)}
                assert keys == {c.conn.channels[channel].key for c in inside}  # type: ignore[union-attr]

    for _ in range(1500):
        client = rng.choice(clients)
        msg: dict[str, Any] = {}
        if rng.random() < 0.5:
            msg = valid(client)
        else:
            if rng.random() < 0.9:
                msg["event"] = rng.choice(events)
            if rng.random() < 0.5:
                msg["channel"] = rng.choice(channels)
            if rng.random() < 0.8:
                msg["data"] = value()
        await client.send(msg)
        if rng.random() < 0.02:
            await client.close()
            clients.remove(client)
            clients.append(harness.connect(app))
            everyone.append(clients[-1])
        harness.clock.advance(0.01)

        if rng.random() < 0.05:
            await check_state()

    seen = {f["event"] for c in everyone for f in c.sink.frames}
    assert {"pusher_internal:member_added", "pusher_internal:member_removed", "client-x"} <= seen
    for client in everyone:
        assert not client.sink.closed
        messages = [f["data"].get("message") for f in client.sink.frames if isinstance(f.get("data"), dict)]
        assert "Internal server error" not in messages
    for client in clients:
        await client.close()
    assert await harness.backend.occupancy.channels(app.id) == {}
    assert await harness.backend.presence.user_counts(app.id, ["presence-a", "presence-b"]) == [0, 0]
    assert harness.hub.topics() == []
