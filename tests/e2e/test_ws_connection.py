"""Connection handshake and refusals (checklist items 1-3), with raw sockets and real pusher-js."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import HeraldProcess
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import RawClient, open_raw, raw_connect

pytest_plugins = ["tests.wsfixtures"]

SOCKET_ID_RE = re.compile(r"^\d+\.\d+$")
# pusher-js retries after at most 1 s for every code it retries on; waiting longer proves it gave up.
PUSHERJS_MAX_RETRY_DELAY_S = 1.5


async def refused(port: int, key: str, query: str | None = "protocol=7&client=js&version=8.6.0") -> tuple:
    client = await open_raw(port, key, query, expect_established=False)
    return await client.closed()


# ---- 1. connection_established ------------------------------------------------------------------


async def test_first_frame_is_connection_established_with_string_data(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, "key-1", expect_established=False) as c:
        raw = await asyncio.wait_for(c.ws.recv(), 5)
        msg = json.loads(raw)
        assert set(msg) == {"event", "data"}, msg  # no channel on connection events
        assert msg["event"] == "pusher:connection_established"
        assert isinstance(msg["data"], str), "data must be a JSON-encoded string"
        data = json.loads(msg["data"])
        assert SOCKET_ID_RE.match(data["socket_id"]), data
        assert data["activity_timeout"] == 120
        assert isinstance(data["activity_timeout"], int)
        await c.expect_open()


async def test_socket_ids_are_unique(herald_server: HeraldProcess) -> None:
    clients = [await open_raw(herald_server.port, "key-1") for _ in range(20)]
    try:
        ids = {c.socket_id for c in clients}
        assert len(ids) == 20
    finally:
        for c in clients:
            await c.close()


async def test_unknown_query_parameters_are_ignored(herald_server: HeraldProcess) -> None:
    query = "protocol=7&client=python&version=0.1&flash=false&whatever=1&x"
    async with raw_connect(herald_server.port, "key-1", query) as c:
        assert SOCKET_ID_RE.match(c.socket_id)


async def test_pusherjs_connects_and_gets_socket_id(herald_server: HeraldProcess, node: NodeDriver) -> None:
    a = await node.connect("a", "key-1", herald_server.port)
    assert a.state == "connected"
    assert a.socket_id is not None and SOCKET_ID_RE.match(a.socket_id)
    state = await a.query_state()
    assert state["state"] == "connected" and state["socket_id"] == a.socket_id
    assert not [r for r in a.reports if r["type"] == "error"], a.history()


# ---- 2. refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        pytest.param("no-such-key", "protocol=7", 4001, id="unknown-key"),
        pytest.param("key-off", "protocol=7", 4003, id="disabled-app"),
        pytest.param("key-1", "protocol=3", 4007, id="protocol-3"),
        pytest.param("key-1", "protocol=8", 4007, id="protocol-8"),
        pytest.param("key-1", "protocol=seven", 4007, id="protocol-not-a-number"),
        # The reference allows treating a missing protocol as 7 or refusing with 4008; Herald refuses.
        pytest.param("key-1", "client=js&version=8.6.0", 4008, id="protocol-missing"),
        pytest.param("key-1", None, 4008, id="no-query-string"),
    ],
)
async def test_refused_with_pusher_error_then_close(
    herald_server: HeraldProcess, key: str, query: str | None, code: int
) -> None:
    close_code, reason, frames = await refused(herald_server.port, key, query)
    assert close_code == code, (close_code, reason, frames)
    assert reason, "the close reason carries the message pusher-js shows"
    assert len(frames) == 1, frames
    assert frames[0]["event"] == "pusher:error"
    assert frames[0]["data"]["code"] == code
    assert isinstance(frames[0]["data"]["message"], str) and frames[0]["data"]["message"]


async def test_protocol_versions_4_to_7_accepted(herald_server: HeraldProcess) -> None:
    for version in (4, 5, 6, 7):
        async with raw_connect(herald_server.port, "key-1", f"protocol={version}") as c:
            await c.expect_open()


async def test_wrong_path_is_not_a_websocket_endpoint(herald_server: HeraldProcess) -> None:
    url = f"ws://127.0.0.1:{herald_server.port}/apps/key-1?protocol=7"
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        async with connect(url, open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)


async def test_over_connection_quota_4004_and_quota_released_on_close(herald_server: HeraldProcess) -> None:
    # app-small allows 2 concurrent connections.
    # (eventually: sockets of an earlier test on app-small may still be being released)
    first = await connect_eventually(herald_server.port, "key-small")
    second = await connect_eventually(herald_server.port, "key-small")
    try:
        code, _reason, frames = await refused(herald_server.port, "key-small")
        assert code == 4004
        assert frames and frames[0]["event"] == "pusher:error" and frames[0]["data"]["code"] == 4004
        # Other apps are not affected by app-small's quota.
        async with raw_connect(herald_server.port, "key-1") as other:
            await other.expect_open()
        await first.expect_open()
    finally:
        await first.close()
    # The slot is released when a socket closes (allow the server a moment to see the close).
    third = await connect_eventually(herald_server.port, "key-small")
    try:
        await third.expect_open()
        await second.expect_open()
    finally:
        await third.close()
        await second.close()


async def connect_eventually(port: int, key: str, attempts: int = 50) -> RawClient:
    for _ in range(attempts):
        client = await open_raw(port, key, expect_established=False)
        msg = await client.recv()
        if msg["event"] == "pusher:connection_established":
            client.socket_id = json.loads(msg["data"])["socket_id"]
            return client
        await client.closed()
        await asyncio.sleep(0.05)
    raise AssertionError(f"could not connect to {key} after {attempts} attempts")


@pytest.mark.parametrize(
    ("key", "code"),
    [pytest.param("no-such-key", 4001, id="unknown-key"), pytest.param("key-off", 4003, id="disabled-app")],
)
async def test_pusherjs_gives_up_on_refusal(
    herald_server: HeraldProcess, node: NodeDriver, key: str, code: int
) -> None:
    a = await node.connect("a", key, herald_server.port, wait=False)
    error = await a.wait_error()
    assert pusher_error_code(error) == code, a.history()
    await a.wait_state("disconnected")
    await assert_no_reconnect(a)


async def test_pusherjs_gives_up_when_over_quota(herald_server: HeraldProcess, node: NodeDriver) -> None:
    holders = [await connect_eventually(herald_server.port, "key-small") for _ in range(2)]
    try:
        a = await node.connect("a", "key-small", herald_server.port, wait=False)
        error = await a.wait_error()
        assert pusher_error_code(error) == 4004, a.history()
        await a.wait_state("disconnected")
        await assert_no_reconnect(a)
    finally:
        for h in holders:
            await h.close()


def pusher_error_code(error_report: dict) -> int | None:
    """The Pusher error code inside a pusher-js connection 'error' report, however it is wrapped."""
    error = error_report["error"]
    while isinstance(error, dict):
        data = error.get("data")
        if isinstance(data, dict) and "code" in data:
            return data["code"]
        error = error.get("error")
    return None


async def assert_no_reconnect(client: PusherJsClient) -> None:
    """pusher-js stays disconnected: no `connecting` state after its longest retry delay."""
    await asyncio.sleep(PUSHERJS_MAX_RETRY_DELAY_S)
    later = [r for r in client.reports[client.cursor :] if r["type"] == "state"]
    assert not later, f"pusher-js changed state after giving up:\n{client.history()}"
    assert (await client.query_state())["state"] == "disconnected"


# ---- 3. ping / pong -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ping",
    [
        pytest.param({"event": "pusher:ping", "data": {}}, id="object-data"),
        pytest.param({"event": "pusher:ping", "data": "{}"}, id="string-data"),
        pytest.param({"event": "pusher:ping"}, id="no-data"),
    ],
)
async def test_ping_gets_pong(herald_server: HeraldProcess, ping: dict) -> None:
    async with raw_connect(herald_server.port, "key-1") as c:
        await c.send(ping)
        assert await c.recv() == {"event": "pusher:pong", "data": "{}"}


async def test_client_pong_is_accepted_silently(herald_server: HeraldProcess) -> None:
    async with raw_connect(herald_server.port, "key-1") as c:
        await c.send({"event": "pusher:pong", "data": {}})
        await c.send({"event": "pusher:pong", "data": "{}"})
        await c.expect_open()  # the next frame is the pong of this ping: nothing answered the pongs
