"""Public and private subscriptions (checklist items 4-7), raw on the wire and through pusher-js.

Non-delivery is proven without sleeping: after the event that must not arrive, a marker event is sent
on another channel in the same order-preserving path, and the next frame must be the marker.
"""

from __future__ import annotations

import json

import pytest

from tests.authserver import AuthMode, AuthServer
from tests.helpers import HeraldProcess
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import RawClient, channel_auth, raw_connect, unique

pytest_plugins = ["tests.wsfixtures"]

KEY, SECRET = "key-1", "secret-1"  # app-1: client events enabled


# ---- 4-5. public ------------------------------------------------------------------------------


async def test_public_subscribe_with_empty_auth(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, auth="")
        msg = await c.recv()
        assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


async def test_public_subscribe_without_auth_field(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, auth=None)
        assert (await c.recv())["event"] == "pusher_internal:subscription_succeeded"


async def test_public_subscribe_ignores_an_auth_value(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, auth="whatever:not-checked")
        assert (await c.recv())["event"] == "pusher_internal:subscription_succeeded"


async def test_subscribe_with_data_as_json_string(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send({"event": "pusher:subscribe", "data": json.dumps({"auth": "", "channel": channel})})
        msg = await c.recv()
        assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


async def test_private_subscribe_with_data_as_json_string(herald_server: HeraldProcess) -> None:
    channel = unique("private-str")
    async with raw_connect(herald_server.port, KEY) as c:
        auth = channel_auth(KEY, SECRET, c.socket_id, channel)
        await c.send({"event": "pusher:subscribe", "data": json.dumps({"auth": auth, "channel": channel})})
        assert (await c.recv())["event"] == "pusher_internal:subscription_succeeded"


async def test_unsubscribe_gets_no_reply_and_stops_delivery(herald_server: HeraldProcess) -> None:
    channel, marker_channel = unique("private-unsub"), unique("private-marker")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        for c in (a, b):
            await c.subscribe_private(KEY, SECRET, channel)
            await c.subscribe_private(KEY, SECRET, marker_channel)
        await a.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        await a.expect_open()  # the next frame is the pong: unsubscribe has no reply
        await b.send({"event": "client-after-unsubscribe", "channel": channel, "data": {}})
        await b.send({"event": "client-marker", "channel": marker_channel, "data": {}})
        msg = await a.recv()
        assert msg["event"] == "client-marker", f"a still received events of {channel}: {msg}"


async def test_unsubscribe_with_data_as_json_string(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe_ok(channel)
        await c.send({"event": "pusher:unsubscribe", "data": json.dumps({"channel": channel})})
        await c.expect_open()
        await c.subscribe_ok(channel)  # can join again


async def test_unsubscribe_unknown_channel_is_silent(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send({"event": "pusher:unsubscribe", "data": {"channel": unique("never-joined")}})
        await c.send({"event": "pusher:unsubscribe", "data": {"channel": unique("private-never")}})
        await c.expect_open()


async def test_subscribe_twice_is_confirmed_again(herald_server: HeraldProcess) -> None:
    channel = unique("public")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe_ok(channel)
        await c.subscribe_ok(channel)
        await c.expect_open()


async def test_pusherjs_public_subscription(herald_server: HeraldProcess, node: NodeDriver) -> None:
    channel = unique("public")
    a = await node.connect("a", KEY, herald_server.port)
    report = await a.subscribe(channel)
    assert report is not None and report["data"] == {}
    assert a.last_frame(channel)["event"] == "pusher_internal:subscription_succeeded"
    state = await a.query_state()
    assert state["channels"][channel] == {"subscribed": True, "pending": False}


# ---- 6-7. private -------------------------------------------------------------------------------


async def test_private_valid_signature(herald_server: HeraldProcess) -> None:
    channel = unique("private-ok")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, channel_auth(KEY, SECRET, c.socket_id, channel))
        msg = await c.recv()
        assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


async def test_reference_vector_app_private_signature(herald_server: HeraldProcess) -> None:
    # The test-vector credentials (app "3"); the socket id is the server's, so the digest is recomputed.
    key, secret = "278d425bdf160c739803", "7ad3773142a6692b25b8"
    async with raw_connect(herald_server.port, key) as c:
        await c.subscribe_private(key, secret, "private-foobar")


async def test_private_with_channel_data_signed_as_third_part(herald_server: HeraldProcess) -> None:
    channel = unique("private-cd")
    channel_data = json.dumps({"user_id": "u1", "user_info": {"name": "One"}})
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, channel_auth(KEY, SECRET, c.socket_id, channel, channel_data), channel_data)
        msg = await c.recv()
        assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


async def test_private_with_channel_data_but_two_part_signature_is_refused(herald_server: HeraldProcess) -> None:
    # channel_data present -> the signature must cover it.
    channel = unique("private-cd")
    channel_data = json.dumps({"user_id": "u1"})
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, channel_auth(KEY, SECRET, c.socket_id, channel), channel_data)
        assert_auth_error(await c.recv(), channel)


def assert_auth_error(msg: dict, channel: str) -> None:
    assert msg["event"] == "pusher:subscription_error", msg
    assert msg["channel"] == channel
    data = msg["data"]
    assert isinstance(data, dict), msg
    assert data["type"] == "AuthError"
    assert data["status"] == 401
    assert isinstance(data["error"], str) and data["error"]


def bad_auths(c: RawClient, channel: str) -> dict[str, str | None]:
    good = channel_auth(KEY, SECRET, c.socket_id, channel)
    digest = good.split(":", 1)[1]
    return {
        "missing": None,
        "empty": "",
        "wrong-signature": channel_auth(KEY, "not-the-secret", c.socket_id, channel),
        "wrong-key": f"key-2:{digest}",
        "other-apps-key-and-secret": channel_auth("key-2", "secret-2", c.socket_id, channel),
        "no-colon": KEY + digest,
        "key-only": f"{KEY}:",
        "other-socket": channel_auth(KEY, SECRET, "1.1", channel),
        "other-channel": channel_auth(KEY, SECRET, c.socket_id, channel + "x"),
        "trailing-garbage": good + ":x",
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "wrong-signature",
        "wrong-key",
        "other-apps-key-and-secret",
        "no-colon",
        "key-only",
        "other-socket",
        "other-channel",
        "trailing-garbage",
    ],
)
async def test_private_bad_auth_is_refused_and_socket_stays_open(herald_server: HeraldProcess, case: str) -> None:
    channel, marker_channel = unique("private-bad"), unique("private-marker")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe(channel, bad_auths(a, channel)[case])
        assert_auth_error(await a.recv(), channel)
        await a.expect_open()
        # Not subscribed: a client event on the channel does not reach a; the marker after it does.
        await a.subscribe_private(KEY, SECRET, marker_channel)
        await b.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, marker_channel)
        await b.send({"event": "client-secret", "channel": channel, "data": {}})
        await b.send({"event": "client-marker", "channel": marker_channel, "data": {}})
        assert (await a.recv())["event"] == "client-marker"
        # And a can still subscribe properly afterwards.
        await a.subscribe_private(KEY, SECRET, channel)


async def test_private_auth_not_a_string_is_refused(herald_server: HeraldProcess) -> None:
    channel = unique("private-bad")
    async with raw_connect(herald_server.port, KEY) as c:
        for auth in (123, {"auth": "x"}, ["a", "b"], True):
            await c.send({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})
            assert_auth_error(await c.recv(), channel)
        await c.expect_open()


async def test_encrypted_channel_uses_private_auth(herald_server: HeraldProcess) -> None:
    channel = unique("private-encrypted-x")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, "")
        assert_auth_error(await c.recv(), channel)
        await c.subscribe_private(KEY, SECRET, channel)


async def test_private_prefix_is_anchored(herald_server: HeraldProcess) -> None:
    # `foo-private-bar` is public (soketi's unanchored regex would demand auth).
    channel = unique("foo-private-bar")
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe_ok(channel, "")


# ---- pusher-js with the real auth endpoint ------------------------------------------------------


async def pusherjs_pair(
    node: NodeDriver, auth: AuthServer, port: int, key: str = KEY
) -> tuple[PusherJsClient, PusherJsClient]:
    a = await node.connect("a", key, port, auth=auth)
    b = await node.connect("b", key, port, auth=auth)
    return a, b


async def test_pusherjs_private_subscription_via_auth_endpoint(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("private-js")
    a, b = await pusherjs_pair(node, auth_server, herald_server.port)
    await a.subscribe(channel)
    await b.subscribe(channel)
    [request] = [r for r in auth_server.requests_for("a") if r.channel_name == channel]
    assert request.socket_id == a.socket_id and request.status == 200
    assert await a.trigger(channel, "client-hello", {"from": "a"})
    got = await b.wait_event(channel, "client-hello")
    assert got["data"] == {"from": "a"}


async def test_pusherjs_private_with_channel_data(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("private-js-cd")
    auth_server.set_user("a", "user-a", {"name": "A"})
    auth_server.set_mode("a", AuthMode.WITH_CHANNEL_DATA)
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    await a.subscribe(channel)
    [request] = auth_server.requests_for("a")
    assert "channel_data" in request.response, "the auth endpoint signed channel_data on a private channel"


@pytest.mark.parametrize(
    "mode",
    [
        AuthMode.BAD_SIGNATURE,
        AuthMode.WRONG_KEY,
        AuthMode.MALFORMED,
        AuthMode.MISSING_AUTH,
        AuthMode.WRONG_SOCKET,
    ],
)
async def test_pusherjs_private_bad_auth_gives_subscription_error(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer, mode: AuthMode
) -> None:
    channel, marker_channel = unique("private-js-bad"), unique("private-js-marker")
    auth_server.set_mode("a", mode, channel=channel)
    a, b = await pusherjs_pair(node, auth_server, herald_server.port)
    error = await a.subscribe_expect_error(channel)
    assert error["data"]["type"] == "AuthError"
    assert error["data"]["status"] == 401
    assert error["data"]["error"]
    # The error came from Herald (a frame on the channel), not from pusher-js's own auth call.
    assert a.last_frame(channel)["event"] == "pusher:subscription_error"
    assert a.state == "connected"
    # Not subscribed: b's client event on the channel doesn't reach a, b's marker after it does.
    await a.subscribe(marker_channel)
    await b.subscribe(channel)
    await b.subscribe(marker_channel)
    a.skip_to_end()
    await b.trigger(channel, "client-secret", {})
    await b.trigger(marker_channel, "client-marker", {})
    assert (await a.next_message())["event"] == "client-marker", a.history()
    assert (await a.query_state())["state"] == "connected"


async def test_pusherjs_auth_endpoint_refusal_sends_nothing(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("private-js-403")
    auth_server.set_mode("a", AuthMode.HTTP_403)
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    error = await a.subscribe_expect_error(channel)
    assert error["data"]["status"] == 403  # pusher-js's own report of the endpoint's answer
    await a.subscribe(unique("public-after"))  # the connection is fine
