"""The readiness policy when Redis goes away (README, "Redis": "Health and readiness"), with real
Herald processes: liveness never depends on Redis; readiness survives an outage shorter than
--redis-unready-after and ends after a longer one; clients stay connected either way; a node that
never reached Redis is not ready."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authserver import AuthServer
from tests.clusterutil import Cluster, start_cluster, until
from tests.helpers import REPO, free_port, start_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import unique
from tests.redis_server import RedisServer

pytest_plugins = ["tests.wsfixtures"]

APP = {"id": "81", "key": "health-key", "secret": "health-secret"}
WAIT_S = 30.0


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as answered:
        return answered.code, json.loads(answered.read())


@pytest.fixture
def cluster(tmp_path: Path, auth_server: AuthServer) -> Iterator[Cluster]:
    auth_server.add_app(APP)
    redis = RedisServer(tmp_path).start()
    made = start_cluster(tmp_path, redis, [APP], gateways=1)
    # A second gateway that gives up readiness after 1 s without Redis (the first keeps the default).
    made.gateways.append(start_herald(tmp_path, apps=[APP], command="gateway", name="quick",
                                      extra_args=[*redis.herald_args(), "--redis-unready-after", "1",
                                                  "--log-level", "warning"]))
    try:
        yield made
    finally:
        made.stop()


async def test_an_outage_ends_readiness_only_after_the_threshold_and_keeps_clients(
    cluster: Cluster, node: NodeDriver, auth_server: AuthServer
) -> None:
    patient, quick = cluster.gateways
    channel = unique("health")
    clients = [await node.connect(f"c{i}", APP["key"], gw.port, auth=auth_server)
               for i, gw in enumerate(cluster.gateways)]
    for client in clients:
        await client.subscribe(channel)
    assert isinstance(cluster.redis, RedisServer)
    cluster.redis.stop()

    await until(lambda: get(quick.port, "/ready")[0] == 503, WAIT_S, "the quick gateway to turn unready")
    status, body = get(quick.port, "/ready")
    assert body["ready"] is False and body["redis"]["up"] is False and body["redis"]["unready_after_seconds"] == 1
    # The default threshold (60 s) is far away: the other gateway is still ready, and knows Redis is down.
    status, body = get(patient.port, "/ready")
    assert status == 200 and body["ready"] is True and body["redis"]["up"] is False, body
    # Liveness never looks at Redis.
    for gw in cluster.gateways:
        assert get(gw.port, "/") == (200, {"ok": True})
    assert get(cluster.api.port, "/")[0] == 200

    cluster.redis.start()
    await until(lambda: get(quick.port, "/ready")[0] == 200, WAIT_S, "readiness to come back with Redis")
    sdk = cluster.sdk()
    # Events published before a subscriber is back are lost (at most once): probe until both got one.
    waiting = list(clients)
    n = 0
    while waiting:
        n += 1
        assert n < WAIT_S * 2, f"no event reached {[c.name for c in waiting]}"
        try:
            await asyncio.to_thread(sdk.trigger, channel, "probe", {"n": n})
        except Exception:
            await asyncio.sleep(0.5)
            continue
        for client in list(waiting):
            try:
                await client.wait_event(channel, "probe", timeout=0.5)
                waiting.remove(client)
            except AssertionError:
                pass
    # Nobody was disconnected by the outage or by the unready period.
    for client in clients:
        assert client.state == "connected"
        assert not [r for r in client.reports if r.get("type") == "state" and r.get("previous") == "connected"]
    await until(lambda: get(quick.port, "/ready")[1]["redis"]["up"], WAIT_S, "the node to count Redis up")
    assert get(quick.port, "/ready")[1]["redis"]["reconnects"] >= 1


def test_a_node_that_never_reached_redis_is_live_but_not_ready(tmp_path: Path) -> None:
    """A wrong address (or password, or certificate) must not let a rolling update go ahead."""
    redis_port, port = free_port(), free_port()
    log_path = tmp_path / "herald.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald", "gateway", "--host", "127.0.0.1", "--port", str(port),
             "--redis-url", f"redis://127.0.0.1:{redis_port}", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
    redis = RedisServer(tmp_path, port=redis_port)
    try:
        asyncio.run(until(lambda: _answers(port), WAIT_S, "herald to listen"))
        status, body = get(port, "/ready")
        assert status == 503 and body["ready"] is False and body["redis"]["up"] is False, body
        assert get(port, "/") == (200, {"ok": True})
        assert proc.poll() is None, log_path.read_text()
        # Once Redis is there, the node becomes ready without a restart.
        redis.start()
        asyncio.run(until(lambda: get(port, "/ready")[0] == 200, WAIT_S, "readiness once Redis is up"))
        assert "cannot connect" in log_path.read_text()  # the reason was logged meanwhile
    finally:
        proc.terminate()
        proc.wait(10)
        redis.stop()


def _answers(port: int) -> bool:
    try:
        get(port, "/")
        return True
    except OSError:
        return False
