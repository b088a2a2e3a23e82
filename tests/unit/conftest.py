"""Fixtures for the network-free unit tests.

`backend` runs a test once per implementation in BACKEND_FACTORIES: the in-memory one that defines
the semantics, and the Redis one (on a real redis-server the session starts) that must match it.

Tests using `backend` take their app ids from `app_id` (unique per test), so a shared Redis stays
clean between tests and runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.backend import Backend, memory_backend
from shared.redis.backend import redis_backend
from tests.unit.fakes import Harness, ManualClock


def _redis(request: pytest.FixtureRequest) -> Backend:
    # A prefix per test keeps tests apart on the session's redis-server.
    url = request.getfixturevalue("redis_url")
    return redis_backend(url, prefix=f"t{uuid.uuid4().hex[:8]}", cluster=False)


BACKEND_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "memory": lambda request: memory_backend(),
    "redis": _redis,
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
