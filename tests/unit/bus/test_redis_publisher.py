"""The Redis bus's own PUBLISH connection (shared/bus/redis_impl.py, PublisherConnection) against a real,
password-protected redis-server: it authenticates, pipelines concurrent publishes in order, answers
BusUnavailable while Redis is down and reconnects by itself when Redis is back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.bus.base import BusUnavailable, Envelope
from shared.bus.redis_impl import RedisBus
from shared.redis.connection import RedisConnector, parse_redis_url
from tests.helpers import free_port
from tests.redis_server import redis_binary
from tests.unit.fakes import wait_until

PASSWORD = "bus-secret"


class PasswordRedis:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", PASSWORD, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=PASSWORD)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited") from None
                time.sleep(0.05)  # the server's socket appears by itself; nothing to await
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def make_bus(url: str) -> RedisBus:
    return RedisBus(RedisConnector(parse_redis_url(url)), "t", client=None, cluster=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PasswordRedis]:
    made = PasswordRedis(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.stop()


async def test_publishes_in_order_with_auth_and_survives_a_restart(server: PasswordRedis) -> None:
    bus = make_bus(f"redis://:{PASSWORD}@127.0.0.1:{server.port}")
    got: list[Envelope] = []
    bus.set_receiver(got.append)
    await bus.start()
    try:
        await bus.subscribe("app", "news")
        # Concurrent single publishes and one batch share the connection; order per caller holds.
        await asyncio.gather(*(bus.publish(Envelope("app", "news", f"e{i}", "{}")) for i in range(50)))
        await bus.publish_many([Envelope("app", "news", f"b{i}", "{}") for i in range(10)])
        await wait_until(lambda: len(got) == 60)
        assert [e.event for e in got] == [f"e{i}" for i in range(50)] + [f"b{i}" for i in range(10)]

        server.stop()
        with pytest.raises(BusUnavailable):
            await bus.publish(Envelope("app", "news", "lost", "{}"))
        with pytest.raises(BusUnavailable) as many:
            await bus.publish_many([Envelope("app", "news", "lost", "{}")] * 2)
        assert many.value.sent is None

        server.start()
        await wait_until(lambda: all(c.connected for c in bus.connections), timeout=10)
        got.clear()
        await bus.publish(Envelope("app", "news", "back", "{}"))
        await wait_until(lambda: [e.event for e in got] == ["back"])
    finally:
        await bus.close()


async def test_a_wrong_password_is_bus_unavailable(server: PasswordRedis) -> None:
    bus = make_bus(f"redis://:wrong@127.0.0.1:{server.port}")
    try:
        with pytest.raises(BusUnavailable, match="AUTH"):
            await bus.publish(Envelope("app", "news", "x", "{}"))
    finally:
        await bus.close()
