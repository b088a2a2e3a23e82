"""Fixtures of the WebSocket end-to-end tests; test modules load them with
`pytest_plugins = ["tests.wsfixtures"]` (a plugin module, so its fixtures need no imports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.authserver import AuthServer
from tests.conftest import TEST_APPS
from tests.pusherjs import NodeDriver, node_available


@pytest.fixture
async def node() -> AsyncIterator[NodeDriver]:
    """A fresh pusher-js driver process for one test (fails, never skips, when Node or node_modules is
    missing: `cd tests/node && npm ci`)."""
    reason = node_available()
    if reason:
        pytest.fail(reason)
    async with NodeDriver() as driver:
        yield driver


@pytest.fixture(scope="session")
def auth_server_session() -> Iterator[AuthServer]:
    server = AuthServer(TEST_APPS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def auth_server(auth_server_session: AuthServer) -> Iterator[AuthServer]:
    """The session's application auth endpoint, with no client policies and no recorded requests."""
    auth_server_session.reset()
    yield auth_server_session
    auth_server_session.reset()
