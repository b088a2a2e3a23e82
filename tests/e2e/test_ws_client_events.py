"""Client events (checklist item 10) through pusher-js, and their wire form with raw sockets.

app-1 (key-1) has client events enabled; app-2 (key-2) does not. Every rejection is a `pusher:error`
with code 4301 on the sender's socket, which stays open.
"""

from __future__ import annotations

import asyncio
import json

from tests.authserver import AuthServer
from tests.helpers import HeraldProcess
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import RawClient, raw_connect, unique

pytest_plugins = ["tests.wsfixtures"]

KEY, SECRET = "key-1", "secret-1"


async def error_report(client: PusherJsClient) -> dict:
    """The next pusher:error pusher-js reported on the connection (as app code bound to 'error')."""
    report = await client.wait_for(
        lambda r: r["type"] == "error" and r["error"].get("type") == "PusherError", what="a PusherError"
    )
    data: dict = report["error"]["data"]
    return data


def assert_rejected(data: dict, *words: str) -> None:
    assert data["code"] == 4301, data
    message = data["message"].lower()
    for word in words:
        assert word in message, f"{word!r} not in {data['message']!r}"


async def expect_rejection(c: RawClient, *words: str) -> None:
    msg = await c.recv()
    assert msg["event"] == "pusher:error", msg
    assert "channel" not in msg or msg["channel"] is None
    assert_rejected(msg["data"], *words)
    await c.expect_open()


# ---- delivery ---------------------------------------------------------------------------------


async def test_private_client_event_to_others_not_sender_no_user_id(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("private-chat")
    a, b, c = [await node.connect(n, KEY, herald_server.port, auth=auth_server) for n in "abc"]
    for client in (a, b, c):
        await client.subscribe(channel)
    assert await a.trigger(channel, "client-typing", {"typing": True, "text": "héllo ✓"})
    for receiver in (b, c):
        frame = await receiver.wait_for(lambda r: r["type"] == "message" and r["event"] == "client-typing")
        assert "user_id" not in frame
        got = await receiver.wait_event(channel, "client-typing")
        assert got["data"] == {"typing": True, "text": "héllo ✓"}
        assert got["metadata"] == {}, "no user_id on private channels"
    # Not echoed to the sender: a's next frame is b's later event.
    await b.trigger(channel, "client-marker", {})
    assert (await a.next_message())["event"] == "client-marker", a.history()


async def test_client_event_wire_form(herald_server: HeraldProcess) -> None:
    channel = unique("private-wire")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, channel)
        # data relayed as sent: an object stays an object, a string stays the same string.
        await a.send({"event": "client-obj", "channel": channel, "data": {"x": [1, 2]}})
        assert await b.recv() == {"event": "client-obj", "channel": channel, "data": {"x": [1, 2]}}
        await a.send({"event": "client-str", "channel": channel, "data": '{"x": 1}'})
        assert await b.recv() == {"event": "client-str", "channel": channel, "data": '{"x": 1}'}
        await a.send({"event": "client-plain", "channel": channel, "data": "just text"})
        assert await b.recv() == {"event": "client-plain", "channel": channel, "data": "just text"}
        await a.expect_open()  # nothing echoed to a


async def test_presence_client_event_carries_user_id(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("presence-chat")
    auth_server.set_user("a", "alice", {"name": "Alice"})
    auth_server.set_user("b", "bob")
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    await a.subscribe(channel)
    await b.subscribe(channel)
    await a.trigger(channel, "client-hi", {"n": 1})
    frame = await b.wait_for(lambda r: r["type"] == "message" and r["event"] == "client-hi")
    assert frame["user_id"] == "alice"
    got = await b.wait_event(channel, "client-hi")
    assert got["data"] == {"n": 1}
    assert got["metadata"] == {"user_id": "alice"}


async def test_presence_user_id_comes_from_the_authorization_not_the_payload(herald_server: HeraldProcess) -> None:
    channel = unique("presence-spoof")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_presence(KEY, SECRET, channel, "real-a")
        await b.subscribe_presence(KEY, SECRET, channel, "b")
        await a.expect("pusher_internal:member_added", channel)
        await a.send({"event": "client-x", "channel": channel, "data": {}, "user_id": "someone-else"})
        msg = await b.recv()
        assert msg["event"] == "client-x" and msg["user_id"] == "real-a", msg


async def test_presence_numeric_user_id_on_client_event(herald_server: HeraldProcess) -> None:
    channel = unique("presence-numid")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_presence(KEY, SECRET, channel, 77)
        await b.subscribe_presence(KEY, SECRET, channel, 78)
        await a.expect("pusher_internal:member_added", channel)
        await a.send({"event": "client-x", "channel": channel, "data": {}})
        msg = await b.recv()
        assert msg["user_id"] in (77, "77"), msg


# ---- rejections -------------------------------------------------------------------------------


async def test_client_event_on_public_channel_rejected(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    public, marker = unique("public-chat"), unique("private-marker")
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    for client in (a, b):
        await client.subscribe(public)
        await client.subscribe(marker)
    # pusher-js lets app code trigger on a public channel object; Herald must refuse it.
    assert await a.trigger(public, "client-nope", {})
    assert_rejected(await error_report(a), "private", "presence")
    await a.trigger(marker, "client-marker", {})
    assert (await b.next_message())["event"] == "client-marker", b.history()
    assert (await a.query_state())["state"] == "connected"


async def test_client_event_from_non_subscriber_rejected(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel, marker = unique("private-members-only"), unique("private-marker")
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    await a.subscribe(marker)
    await b.subscribe(channel)
    await b.subscribe(marker)
    assert await a.send_event("client-intrude", {"x": 1}, channel)
    assert_rejected(await error_report(a), "not subscribed")
    await a.trigger(marker, "client-marker", {})
    assert (await b.next_message())["event"] == "client-marker", b.history()


async def test_client_event_on_encrypted_channel_rejected(herald_server: HeraldProcess) -> None:
    channel = unique("private-encrypted-chat")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, channel)
        await a.send({"event": "client-x", "channel": channel, "data": {}})
        await expect_rejection(a)
        await b.expect_open()


async def test_client_events_disabled_for_app(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel, barrier_channel = unique("private-app2"), unique("public-app2")
    a = await node.connect("a", "key-2", herald_server.port, auth=auth_server)
    b = await node.connect("b", "key-2", herald_server.port, auth=auth_server)
    await a.subscribe(channel)
    await b.subscribe(channel)
    assert await a.trigger(channel, "client-x", {"n": 1})
    assert_rejected(await error_report(a), "not enabled")
    # Herald answered a, so the event was handled; b's next frame is its own later subscription.
    b.skip_to_end()
    await b.subscribe(barrier_channel, wait=False)
    nxt = await b.next_message()
    assert nxt["event"] == "pusher_internal:subscription_succeeded", b.history()
    assert nxt["channel"] == barrier_channel
    assert (await a.query_state())["state"] == "connected"


async def test_client_event_without_channel_rejected(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as a:
        await a.send({"event": "client-x", "data": {}})
        await expect_rejection(a)


async def test_client_event_too_large_rejected(herald_server: HeraldProcess) -> None:
    channel = unique("private-big")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, channel)
        await a.send({"event": "client-big", "channel": channel, "data": "x" * 11_000})
        await expect_rejection(a, "larger")
        await a.send({"event": "client-ok", "channel": channel, "data": "x" * 9_000})
        assert (await b.recv())["event"] == "client-ok"


async def test_client_event_name_too_long_rejected(herald_server: HeraldProcess) -> None:
    channel = unique("private-longname")
    async with raw_connect(herald_server.port, KEY) as a:
        await a.subscribe_private(KEY, SECRET, channel)
        await a.send({"event": "client-" + "x" * 200, "channel": channel, "data": {}})
        await expect_rejection(a)


async def test_pusher_prefixed_events_are_not_relayed(herald_server: HeraldProcess) -> None:
    channel = unique("private-reserved")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, channel)
        for name in ("pusher:fake", "pusher_internal:member_added", "not-a-client-event"):
            await a.send({"event": name, "channel": channel, "data": "{}"})
            msg = await a.recv()
            assert msg["event"] == "pusher:error", msg
        await a.send({"event": "client-marker", "channel": channel, "data": {}})
        assert (await b.recv())["event"] == "client-marker"


# ---- rate limit -------------------------------------------------------------------------------


async def test_eleventh_client_event_within_a_second_rejected(herald_server: HeraldProcess) -> None:
    channel, marker = unique("private-rate"), unique("private-rate-marker")
    async with (
        raw_connect(herald_server.port, KEY) as a,
        raw_connect(herald_server.port, KEY) as b,
        raw_connect(herald_server.port, KEY) as c,
    ):
        for client in (a, b, c):
            await client.subscribe_private(KEY, SECRET, channel)
        await b.subscribe_private(KEY, SECRET, marker)
        await c.subscribe_private(KEY, SECRET, marker)
        # One write with 11 frames, so all of them arrive well within one second.
        frames = [json.dumps({"event": "client-n", "channel": channel, "data": {"n": i}}) for i in range(11)]
        await asyncio.gather(*(a.ws.send(f) for f in frames))
        err = await a.recv()
        assert err["event"] == "pusher:error", err
        assert_rejected(err["data"], "rate limit")
        await a.expect_open()
        await c.send({"event": "client-marker", "channel": marker, "data": {}})
        received = []
        while (msg := await b.recv())["event"] != "client-marker":
            received.append(msg["data"]["n"])
        assert received == list(range(10))


async def test_pusherjs_rate_limited_client_stays_connected(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("private-js-rate")
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    await a.subscribe(channel)
    await b.subscribe(channel)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(11):
        await a.trigger(channel, "client-n", {"n": i})
    assert loop.time() - start < 0.9, "the driver was too slow to send 11 events within the window"
    assert_rejected(await error_report(a), "rate limit")
    for i in range(10):
        got = await b.wait_event(channel, "client-n")
        assert got["data"] == {"n": i}
    # The limit is per second: after the window a can send again, still on the same socket.
    socket_id = a.socket_id
    await asyncio.sleep(1.1)
    await a.trigger(channel, "client-after", {})
    await b.wait_event(channel, "client-after")
    assert a.socket_id == socket_id and (await a.query_state())["state"] == "connected"
