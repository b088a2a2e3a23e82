"""Malformed and unexpected client input: each gets a clear `pusher:error` (or a
`pusher:subscription_error` for bad channel names), the socket stays open, and the server keeps
serving new connections."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import HeraldProcess
from tests.rawclient import RawClient, open_raw, raw_connect, unique

KEY = "key-1"
INVALID_MESSAGE = 4200


async def expect_error(c: RawClient, code: int | None = INVALID_MESSAGE, *words: str) -> dict[str, Any]:
    msg = await c.recv()
    assert msg["event"] == "pusher:error", msg
    data = msg["data"]
    assert isinstance(data, dict) and set(data) >= {"code", "message"}, msg
    assert data["code"] == code, msg
    assert isinstance(data["message"], str) and data["message"], msg
    for word in words:
        assert word.lower() in data["message"].lower(), f"{word!r} not in {data['message']!r}"
    return msg


async def assert_server_still_serves(port: int) -> None:
    async with raw_connect(port, KEY) as fresh:
        await fresh.expect_open()
        await fresh.subscribe_ok(unique("public-after-bad-input"))


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        pytest.param("{not json", ["JSON"], id="invalid-json"),
        pytest.param("", ["JSON"], id="empty-text"),
        pytest.param("[1, 2]", ["object"], id="json-array"),
        pytest.param('"pusher:ping"', ["object"], id="json-string"),
        pytest.param("42", ["object"], id="json-number"),
        pytest.param("null", ["object"], id="json-null"),
        pytest.param(json.dumps({"data": {}}), ["event"], id="missing-event"),
        pytest.param(json.dumps({"event": 5, "data": {}}), ["event"], id="event-not-a-string"),
        pytest.param(json.dumps({"event": "", "data": {}}), ["event"], id="event-empty"),
        pytest.param(json.dumps({"event": None}), ["event"], id="event-null"),
        pytest.param(json.dumps({"event": "pusher:subscribe", "data": 5}), [], id="subscribe-data-number"),
        pytest.param(json.dumps({"event": "pusher:subscribe", "data": "not json"}), [], id="subscribe-data-bad-string"),
        pytest.param(json.dumps({"event": "pusher:subscribe", "data": ["x"]}), [], id="subscribe-data-array"),
        pytest.param(json.dumps({"event": "pusher:subscribe"}), [], id="subscribe-no-data"),
        pytest.param(json.dumps({"event": "pusher:subscribe", "data": {}}), ["channel"], id="subscribe-no-channel"),
        pytest.param(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": 7}}), ["channel"], id="subscribe-channel-int"
        ),
        pytest.param(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": ""}}),
            ["channel"],
            id="subscribe-channel-empty",
        ),
        pytest.param(json.dumps({"event": "pusher:unsubscribe", "data": {}}), ["channel"], id="unsubscribe-no-channel"),
        pytest.param(json.dumps({"event": "pusher:unsubscribe", "data": 3}), [], id="unsubscribe-data-number"),
        pytest.param(json.dumps({"event": "my-event", "data": {}}), ["my-event"], id="unknown-event"),
        pytest.param(json.dumps({"event": "pusher:nonsense", "data": {}}), [], id="unknown-pusher-event"),
        pytest.param(json.dumps({"event": "pusher_internal:member_added", "data": {}}), [], id="internal-event"),
    ],
)
async def test_bad_frame_gets_pusher_error_and_socket_stays_open(
    herald_server: HeraldProcess, frame: str, words: list[str]
) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send(frame)
        await expect_error(c, INVALID_MESSAGE, *words)
        await c.expect_open()
        await c.subscribe_ok(unique("public-still-works"))
    await assert_server_still_serves(herald_server.port)


async def test_binary_frame_gets_pusher_error(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send(json.dumps({"event": "pusher:ping", "data": {}}).encode())
        await expect_error(c, INVALID_MESSAGE, "binary")
        await c.expect_open()
    await assert_server_still_serves(herald_server.port)


async def test_many_bad_frames_in_a_row(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        for i in range(50):
            await c.send(f"garbage {i}")
        for _ in range(50):
            await expect_error(c)
        await c.expect_open()


@pytest.mark.parametrize(
    ("channel", "kind"),
    [
        pytest.param("bad channel", "InvalidChannel", id="space"),
        pytest.param("bad!channel", "InvalidChannel", id="exclamation"),
        pytest.param("bad/channel", "InvalidChannel", id="slash"),
        pytest.param("caf\u00e9", "InvalidChannel", id="non-ascii"),
        pytest.param("#reserved", "InvalidChannel", id="hash-prefix"),
        pytest.param("private-bad:colon", "InvalidChannel", id="colon"),
        pytest.param("pub\n", "InvalidChannel", id="trailing-newline"),
        pytest.param("private-x\n", "InvalidChannel", id="private-trailing-newline"),
        pytest.param("presence-x\n", "InvalidChannel", id="presence-trailing-newline"),
    ],
)
async def test_invalid_channel_name_gets_subscription_error(
    herald_server: HeraldProcess, channel: str, kind: str
) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe(channel, "")
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == channel, msg
        assert msg["data"]["type"] == kind and msg["data"]["status"] == 400, msg
        assert msg["data"]["error"]
        await c.expect_open()


async def test_channel_name_length_limit(herald_server: HeraldProcess) -> None:
    # 200 characters by default (docs/protocol.md, "Limits").
    async with raw_connect(herald_server.port, KEY) as c:
        ok = "a" * 200
        await c.subscribe_ok(ok)
        too_long = "a" * 201
        await c.subscribe(too_long, "")
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == too_long, msg
        assert msg["data"]["type"] in ("InvalidChannel", "LimitReached"), msg
        assert "200" in msg["data"]["error"], msg
        await c.expect_open()


async def test_server_to_user_channel_needs_signin(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.subscribe("#server-to-user-12345", "")
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == "#server-to-user-12345", msg
        assert msg["data"]["type"] == "AuthError"
        await c.expect_open()


async def test_oversized_frame_closes_only_that_socket(herald_server: HeraldProcess) -> None:
    # Above the WebSocket layer's limit (256 KiB) the frame is refused with the standard 1009 close.
    bystander = await open_raw(herald_server.port, KEY)
    try:
        async with raw_connect(herald_server.port, KEY) as c:
            await c.send(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 300_000}}))
            code, _reason, frames = await c.closed()
            assert code == 1009, (code, frames)
        await bystander.expect_open()
        await assert_server_still_serves(herald_server.port)
    finally:
        await bystander.close()


async def test_large_frame_below_transport_limit_is_handled(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 100_000}}))
        assert (await c.recv())["event"] == "pusher:pong"


async def test_deeply_nested_json_does_not_break_the_server(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, KEY) as c:
        await c.send('{"event":"pusher:ping","data":' + "[" * 5000 + "]" * 5000 + "}")
        msg = await c.recv()
        assert msg["event"] in ("pusher:pong", "pusher:error"), msg
        await c.expect_open()
    await assert_server_still_serves(herald_server.port)
