from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HeraldProcess, running_herald
from tests.redis_server import RedisClusterFixture, RedisServer
from tests.tlscerts import Certs, make_certs

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
def redis_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA with server (127.0.0.1, localhost) and client certificates, made for this session."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory, redis_certs: Certs) -> Iterator[RedisServer]:
    """A redis-server speaking only TLS and requiring a client certificate, for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=redis_certs).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on a unix socket only (no TCP port), for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis-unix"), unix=True).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterFixture]:
    """A three-master Redis Cluster for the whole session."""
    cluster = RedisClusterFixture(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def herald_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    """One all-in-one `herald serve` shared by the end-to-end tests that don't need their own."""
    tmp: Path = tmp_path_factory.mktemp("herald")
    with running_herald(tmp, apps=TEST_APPS, extra_args=["--activity-timeout", "120"]) as herald:
        yield herald
