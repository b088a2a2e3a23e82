"""Server-side liveness (docs/protocol.md, "Liveness") on a dedicated server with
`--activity-timeout 1 --pong-timeout 1`:
silent sockets get `pusher:ping` and are then closed with 4201; sockets that answer (or talk) stay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import HeraldProcess, running_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import raw_connect, unique

pytest_plugins = ["tests.wsfixtures"]

APPS = [{"id": "1", "key": "key-live", "secret": "secret-live"}]
KEY = "key-live"
# Pings are sent by a once-per-second sweep: allow two sweeps for each step.
STEP_S = 2.5


@pytest.fixture(scope="module")
def fast_ping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    tmp: Path = tmp_path_factory.mktemp("herald-liveness")
    with running_herald(
        tmp, apps=APPS, name="liveness", extra_args=["--activity-timeout", "1", "--pong-timeout", "1"]
    ) as herald:
        yield herald


async def test_activity_timeout_is_announced(fast_ping_server: HeraldProcess) -> None:
    async with raw_connect(fast_ping_server.port, KEY) as c:
        assert c.established is not None
        assert json.loads(c.established["data"])["activity_timeout"] == 1


async def test_silent_socket_is_pinged_then_closed_4201(fast_ping_server: HeraldProcess) -> None:
    async with raw_connect(fast_ping_server.port, KEY) as c:
        ping = await c.recv(timeout=STEP_S)
        assert ping == {"event": "pusher:ping", "data": "{}"}
        code, reason, frames = await c.closed(timeout=STEP_S)
        assert code == 4201, (code, reason, frames)
        errors = [f for f in frames if f.get("event") == "pusher:error"]
        assert all(f["data"]["code"] == 4201 for f in errors), frames
        assert [f for f in frames if f.get("event") != "pusher:error"] == [], frames


async def test_socket_answering_pings_stays_open(fast_ping_server: HeraldProcess) -> None:
    async with raw_connect(fast_ping_server.port, KEY) as c:
        pings = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * STEP_S
        while loop.time() < deadline:
            try:
                msg = await c.recv(timeout=deadline - loop.time())
            except TimeoutError:
                break
            assert msg == {"event": "pusher:ping", "data": "{}"}, msg
            pings += 1
            await c.send({"event": "pusher:pong", "data": {}})
        assert pings >= 2, "the server should keep pinging an idle socket"
        await c.expect_open()


async def test_any_client_frame_counts_as_activity(fast_ping_server: HeraldProcess) -> None:
    async with raw_connect(fast_ping_server.port, KEY) as c:
        channel = unique("busy")
        await c.subscribe_ok(channel)
        for _ in range(8):  # ~3.2 s of traffic, never 1 s of silence
            await asyncio.sleep(0.4)
            await c.send({"event": "pusher:unsubscribe", "data": {"channel": unique("nothing")}})
        await c.expect_open()  # no pusher:ping arrived in between, and no close


async def test_pusherjs_stays_connected(fast_ping_server: HeraldProcess, node: NodeDriver) -> None:
    a = await node.connect("a", KEY, fast_ping_server.port)
    socket_id = a.socket_id
    channel = unique("live")
    await a.subscribe(channel)
    await asyncio.sleep(2 * STEP_S)
    states = [r for r in a.reports[a.cursor :] if r["type"] in ("state", "error")]
    assert states == [], a.history()
    state = await a.query_state()
    assert state["state"] == "connected" and state["socket_id"] == socket_id
    assert state["channels"][channel]["subscribed"]
    # Liveness traffic did happen: pusher-js pinged (pong seen) and/or Herald pinged.
    liveness = [r for r in a.reports if r["type"] == "message" and r["event"] in ("pusher:ping", "pusher:pong")]
    assert liveness, a.history()
