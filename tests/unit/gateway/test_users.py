"""Sign-in, server-to-user delivery and terminate through the socket-free protocol handler."""

from __future__ import annotations

import orjson

from shared import transitions
from shared.bus.base import BusUnavailable, Envelope
from shared.protocol import codes, events
from shared.protocol.signatures import sign_user
from tests.unit.fakes import FailingCall, Harness, make_app

APP = make_app()


def user_data(user_id: str) -> str:
    return orjson.dumps({"id": user_id, "user_info": {"name": user_id}}).decode()


async def sign_in(client: object, user_id: str) -> None:
    data = user_data(user_id)
    auth = sign_user(APP.key, APP.secret, client.socket_id, data)  # type: ignore[attr-defined]
    await client.send({"event": events.SIGNIN, "data": {"user_data": data, "auth": auth}})  # type: ignore[attr-defined]


async def test_terminate_closes_only_the_users_signed_in_sockets(harness: Harness) -> None:
    alice, bob = harness.connect(APP), harness.connect(APP)
    await sign_in(alice, "alice")
    await sign_in(bob, "bob")
    assert alice.sink.of(events.SIGNIN_SUCCESS) and bob.sink.of(events.SIGNIN_SUCCESS)
    await harness.backend.terminate_user(APP.id, "alice")
    assert alice.sink.close_args == (codes.UNAUTHORIZED, "You got disconnected by the app.")
    assert bob.sink.close_args is None


async def test_the_terminate_name_on_an_ordinary_channel_closes_nobody(harness: Harness) -> None:
    listener = harness.connect(APP)
    await listener.subscribe("news")
    await harness.backend.bus.publish(Envelope(APP.id, "news", events.TERMINATE_CONNECTIONS, None))
    assert listener.sink.close_args is None
    # A terminate for a user nobody here is signed in as closes nobody either.
    await harness.backend.bus.publish(transitions.terminate_user(APP.id, "nobody", "n"))
    assert listener.sink.close_args is None


async def test_a_sign_in_that_fails_on_the_bus_leaves_the_socket_signed_out(harness: Harness) -> None:
    client = harness.connect(APP)
    bus = harness.backend.bus
    harness.hub.bus = FailingCall(bus, "subscribe", BusUnavailable("Redis is away"))  # type: ignore[assignment]
    await sign_in(client, "alice")
    assert [f["data"]["code"] for f in client.sink.take() if f["event"] == events.ERROR] == [codes.RECONNECT]
    assert client.conn.user is None and not client.conn.authorized

    harness.hub.bus = bus  # Redis is back: the retry is a full sign-in, not "same user again"
    await sign_in(client, "alice")
    assert client.sink.of(events.SIGNIN_SUCCESS)
    assert await harness.backend.users.online(APP.id, ["alice"]) == [True]
    await harness.backend.terminate_user(APP.id, "alice")
    assert client.sink.close_args is not None


async def test_a_sign_in_that_fails_in_the_user_store_leaves_the_socket_signed_out(harness: Harness) -> None:
    client = harness.connect(APP)
    users = harness.backend.users
    harness.handler.users.backend.users = FailingCall(users, "signin", BusUnavailable("Redis is away"))  # type: ignore[assignment]
    await sign_in(client, "alice")
    assert not client.sink.of(events.SIGNIN_SUCCESS)
    assert client.conn.user is None
    assert harness.hub.topics() == []

    harness.handler.users.backend.users = users
    await sign_in(client, "alice")
    assert client.sink.of(events.SIGNIN_SUCCESS)
    assert await users.online(APP.id, ["alice"]) == [True]
