"""Apps change without a restart (README, "Changing apps without a restart"), on real processes:
two gateways and a trigger API over one redis-server share one apps file; pusher-js clients stay
connected while apps are added, changed, disabled and removed, and a broken file changes nothing.
SIGHUP reloads a `herald serve` that doesn't poll.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
import pytest
from pusher.errors import PusherBadStatus

from tests.authserver import AuthServer
from tests.clusterutil import LEASE_S, REAPER_S, knowing
from tests.e2e.test_ws_connection import assert_no_reconnect, pusher_error_code
from tests.helpers import HeraldProcess, start_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import unique
from tests.redis_server import RedisServer

pytest_plugins = ["tests.wsfixtures"]

A = {"id": "51", "key": "reload-a", "secret": "secret-a", "enable_client_messages": True}
B = {"id": "52", "key": "reload-b", "secret": "secret-b"}
C = {"id": "53", "key": "reload-c", "secret": "secret-c"}
D = {"id": "54", "key": "reload-d", "secret": "secret-d"}
POLL_S = "0.2"
# Generous: a poll, a read, on a loaded 2-core machine.
RELOAD_TIMEOUT_S = 20


@dataclass
class Nodes:
    apps_file: Path
    gateways: list[HeraldProcess]
    api: HeraldProcess

    @property
    def processes(self) -> list[HeraldProcess]:
        return [*self.gateways, self.api]

    def sdk(self, app: dict[str, Any]) -> pusher.Pusher:
        return pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"], host="127.0.0.1",
                             port=self.api.port, ssl=False, timeout=10)


def write_apps(path: Path, apps: list[dict[str, Any]] | str) -> None:
    path.write_text(apps if isinstance(apps, str) else json.dumps({"apps": apps}))


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    apps_file = tmp_path / "apps.json"
    write_apps(apps_file, [A, B, C])
    redis = RedisServer(tmp_path).start()
    common = ["--redis-url", redis.url, "--node-lease", str(LEASE_S), "--reaper-interval", str(REAPER_S),
              "--apps-file", str(apps_file), "--apps-file-poll", POLL_S]
    started: list[HeraldProcess] = []
    try:
        for i in range(2):
            started.append(start_herald(tmp_path, command="gateway", extra_args=common, name=f"gw{i}"))
        started.append(start_herald(tmp_path, command="trigger-api", extra_args=common, name="api"))
        yield Nodes(apps_file, started[:2], started[2])
    finally:
        for process in started:
            process.stop()
        redis.stop()


async def wait_for_log(processes: list[HeraldProcess], text: str, count: int = 1) -> None:
    """Until every process logged `text` `count` times (a reload's only sign on nodes without clients)."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while not all(p.log().count(text) >= count for p in processes):
        assert time.monotonic() < deadline, "\n---\n".join(p.log() for p in processes)
        await asyncio.sleep(0.05)


async def test_reload_adds_changes_disables_and_removes_apps_under_live_clients(
    nodes: Nodes, node: NodeDriver, auth_server: AuthServer
) -> None:
    auth = knowing(auth_server, [A, B, C, D])
    gw0, gw1 = (gw.port for gw in nodes.gateways)
    room = unique("private-room")
    a0 = await node.connect("a0", A["key"], gw0, auth=auth)
    a1 = await node.connect("a1", A["key"], gw1, auth=auth)
    for client in (a0, a1):
        await client.subscribe(room)
    b0 = await node.connect("b0", B["key"], gw0)
    b1 = await node.connect("b1", B["key"], gw1)
    c1 = await node.connect("c1", C["key"], gw1)
    for client in (a0, a1, b0, b1, c1):
        client.skip_to_end()

    changed_a = {**A, "enable_client_messages": False, "max_backend_events_per_sec": 1}
    write_apps(nodes.apps_file, [changed_a, {**B, "enabled": False}, D])

    # Disabled and removed apps: closed with the documented codes, and pusher-js does not come back.
    for client, code in ((b0, 4003), (b1, 4003), (c1, 4001)):
        error = await client.wait_error(timeout=RELOAD_TIMEOUT_S)
        assert pusher_error_code(error) == code, client.history()
        await client.wait_state("disconnected")
    await assert_no_reconnect(b0)

    # The new app works at once on every gateway.
    await wait_for_log(nodes.processes, "reloaded")
    d0 = await node.connect("d0", D["key"], gw0)
    d1 = await node.connect("d1", D["key"], gw1)
    await d1.subscribe("d-news")
    await asyncio.to_thread(nodes.sdk(D).trigger, ["d-news"], "hello", {"n": 1})
    assert (await d1.wait_event("d-news", "hello"))["data"] == {"n": 1}
    await d0.disconnect()

    # A's clients were never dropped, and A's new settings apply to their next actions.
    for client in (a0, a1):
        assert not [r for r in client.reports[client.cursor:] if r["type"] == "state"], client.history()
    await a0.trigger(room, "client-typing", {"x": 1})
    rejected = await a0.wait_for(lambda r: r["type"] == "message" and r["event"] == "pusher:error", what="4301")
    assert rejected["data"]["code"] == 4301 and "not enabled" in rejected["data"]["message"]
    sdk = nodes.sdk(A)
    await asyncio.to_thread(sdk.trigger, [room], "after-reload", {"k": 1})
    for client in (a0, a1):
        await client.wait_event(room, "after-reload")
    with pytest.raises(PusherBadStatus, match=r"^429: "):
        for _ in range(5):  # 1 event per second now
            await asyncio.to_thread(sdk.trigger, [room], "again", {})

    # A broken file: every process says why and keeps the apps it runs.
    write_apps(nodes.apps_file, '{"apps": [{"id": "51", "key": "reload-a", "secret": "s", "max_conections": 1}]}')
    await wait_for_log(nodes.processes, "apps file not reloaded")
    assert "field 'max_conections': unknown field" in nodes.gateways[0].log()
    again = await node.connect("d2", D["key"], gw1)
    await again.disconnect()
    for client in (a0, a1):
        assert (await client.query_state())["state"] == "connected"


async def test_sighup_reloads_without_polling(tmp_path: Path, node: NodeDriver) -> None:
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text("apps:\n  - {id: '61', key: hup-a, secret: s}\n")
    herald = start_herald(tmp_path, extra_args=["--apps-file", str(apps_file), "--apps-file-poll", "0"])
    try:
        a = await node.connect("a", "hup-a", herald.port)
        apps_file.write_text("apps:\n  - {id: '61', key: hup-a, secret: s}\n  - {id: '62', key: hup-b, secret: s}\n")
        herald.proc.send_signal(signal.SIGHUP)
        await wait_for_log([herald], "reloaded (SIGHUP)")
        await node.connect("b", "hup-b", herald.port)
        assert herald.proc.poll() is None and (await a.query_state())["state"] == "connected"
    finally:
        herald.stop()
