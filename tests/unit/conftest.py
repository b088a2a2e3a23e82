"""Fixtures for the network-free unit tests.

`backend` runs a test once per implementation in BACKEND_FACTORIES. To run the store and bus
behaviour tests against another implementation, add one line, e.g.

    "redis": lambda: redis_backend(os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")),

Tests using `backend` take their app ids from `app_id` (unique per test), so a shared Redis stays
clean between tests and runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.backend import Backend, memory_backend
from tests.unit.fakes import Harness, ManualClock

BACKEND_FACTORIES: dict[str, Callable[[], Backend]] = {
    "memory": memory_backend,
}


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made = BACKEND_FACTORIES[request.param]()
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
