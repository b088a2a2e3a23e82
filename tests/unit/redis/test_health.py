"""Redis health: the readiness policy and the facts behind the herald_redis_* metrics, first on a
manual clock, then on a real redis-server that goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest

from shared.redis.backend import RedisBackend, redis_backend
from shared.redis.health import COMMANDS, RedisHealth
from tests.redis_server import RedisServer
from tests.unit.fakes import ManualClock

OUTAGE_WAIT_S = 20.0


def test_not_ready_before_redis_was_ever_reached() -> None:
    """A node with a wrong URL or password must not take traffic, nor let a rollout proceed."""
    clock = ManualClock()
    health = RedisHealth(unready_after_s=60, clock=clock)
    assert not health.up and not health.ready()
    clock.advance(3600)
    assert not health.ready() and health.outage_s_total() == 0 and health.reconnects == 0
    health.report(COMMANDS, True)
    assert health.up and health.ready() and health.reconnects == 0


def test_a_short_outage_keeps_readiness_a_long_one_ends_it() -> None:
    clock = ManualClock()
    health = RedisHealth(unready_after_s=60, clock=clock)
    health.report(COMMANDS, True)
    health.report("subscriber a", True)
    health.report("subscriber a", False)  # the subscriber noticed first
    assert not health.up and health.ready()
    clock.advance(30)
    health.report(COMMANDS, False)  # then the heartbeat: still one outage, from the first report
    assert health.down_for_s() == 30 and health.ready()
    clock.advance(30)
    assert health.ready()  # exactly the threshold
    clock.advance(0.5)
    assert not health.ready()
    assert health.facts() == {"up": False, "reconnects": 0, "outage_seconds_total": 60.5,
                              "down_for_seconds": 60.5, "unready_after_seconds": 60,
                              "down": ["commands", "subscriber a"]}
    health.report("subscriber a", True)
    assert not health.up  # commands still failing
    health.report(COMMANDS, True)
    assert health.up and health.ready() and health.reconnects == 1 and health.outage_s_total() == 60.5
    clock.advance(100)
    assert health.outage_s_total() == 60.5
    health.report(COMMANDS, False)
    clock.advance(2)
    assert health.outage_s_total() == 62.5  # the ongoing outage counts
    assert health.facts()["reconnects"] == 1


def test_a_subscriber_closed_on_purpose_no_longer_counts() -> None:
    health = RedisHealth()
    health.report(COMMANDS, True)
    health.report("subscriber x", False)
    assert not health.up
    health.forget("subscriber x")
    assert health.up


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + OUTAGE_WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def metric(name: str) -> float:
    for line in generate_latest().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_outage_and_recovery_are_counted_on_a_real_server(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    # A short lease makes the heartbeat (lease / 3) notice the outage and the recovery quickly.
    backend: RedisBackend = redis_backend(server.url, prefix="health", lease_s=0.6, reaper_interval_s=0.5,
                                          unready_after_s=3600)
    health = backend.node.health
    try:
        await backend.start()
        await until(lambda: health.up, "the first contact")
        assert health.reconnects == 0 and metric("herald_redis_up") == 1
        server.stop()
        await until(lambda: not health.up, "the outage to be noticed")
        assert health.ready()  # a short outage keeps the node ready
        assert metric("herald_redis_up") == 0
        server.start()
        await until(lambda: health.up, "the recovery")
        assert health.reconnects == 1 and health.outage_s_total() > 0
        assert metric("herald_redis_reconnects_total") == 1
        assert metric("herald_redis_outage_seconds_total") == health.outage_s_total()
        # The subscriber came back too and delivers.
        assert all(c.connected for c in backend.bus.connections)  # type: ignore[attr-defined]
    finally:
        await backend.close()
        server.cleanup()
