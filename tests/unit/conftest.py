"""Fixtures for the network-free unit tests.

`backend` runs a test once per implementation in BACKEND_FACTORIES: the in-memory one that defines
the semantics, and the Redis one (on real redis-servers the session starts: plain TCP, TLS, a unix
socket and a Redis Cluster) that must match it.

Tests using `backend` take their app ids from `app_id` (unique per test), so a shared Redis stays
clean between tests and runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.backend import Backend, memory_backend
from shared.redis.backend import redis_backend
from shared.redis.connection import TlsOptions
from tests.redis_server import RedisClusterFixture, RedisServer
from tests.unit.fakes import Harness, ManualClock


def _prefix() -> str:
    # A prefix per test keeps tests apart on the session's redis-servers.
    return f"t{uuid.uuid4().hex[:8]}"


def _redis(request: pytest.FixtureRequest) -> Backend:
    return redis_backend(request.getfixturevalue("redis_url"), prefix=_prefix(), cluster=False)


def _redis_tls(request: pytest.FixtureRequest) -> Backend:
    server: RedisServer = request.getfixturevalue("redis_tls")
    assert server.tls is not None
    tls = TlsOptions(ca_file=str(server.tls.ca), cert_file=str(server.tls.client_cert),
                     key_file=str(server.tls.client_key))
    return redis_backend(server.url, prefix=_prefix(), cluster=False, tls=tls)


def _redis_unix(request: pytest.FixtureRequest) -> Backend:
    server: RedisServer = request.getfixturevalue("redis_unix")
    return redis_backend(server.url, prefix=_prefix())


def _redis_cluster(request: pytest.FixtureRequest) -> Backend:
    cluster: RedisClusterFixture = request.getfixturevalue("redis_cluster")
    return redis_backend(cluster.url, prefix=_prefix(), cluster=True)


BACKEND_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "memory": lambda request: memory_backend(),
    "redis": _redis,
    "redis-tls": _redis_tls,
    "redis-unix": _redis_unix,
    "redis-cluster": _redis_cluster,
}


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made = BACKEND_FACTORIES[request.param](request)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def app_id() -> str:
    """An app id no other test (or earlier run against the same Redis) uses."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def harness(clock: ManualClock) -> Harness:
    """The protocol handler on a fresh in-memory backend and a real hub."""
    return Harness(clock=clock)
