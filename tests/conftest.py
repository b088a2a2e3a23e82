from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HeraldProcess, running_herald
from tests.redis_server import RedisServer

# Apps every end-to-end test can rely on; tests that need other settings start their own server.
# Ids are numeric: the PyPI pusher SDK accepts no other.
TEST_APPS: list[dict[str, Any]] = [
    {"id": "1", "key": "key-1", "secret": "secret-1", "enable_client_messages": True},
    {"id": "2", "key": "key-2", "secret": "secret-2"},  # client events disabled
    {"id": "10", "key": "key-off", "secret": "secret-off", "enabled": False},
    {"id": "4", "key": "key-small", "secret": "secret-small", "max_connections": 2,
     "max_presence_members_per_channel": 2, "enable_client_messages": True},
    # The reference's test-vector credentials (sections 5 and 6.2).
    {"id": "3", "key": "278d425bdf160c739803", "secret": "7ad3773142a6692b25b8"},
]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port for the whole session (tests use their own key prefixes)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def herald_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    """One all-in-one `herald serve` shared by the end-to-end tests that don't need their own."""
    tmp: Path = tmp_path_factory.mktemp("herald")
    with running_herald(tmp, apps=TEST_APPS, extra_args=["--activity-timeout", "120"]) as herald:
        yield herald
