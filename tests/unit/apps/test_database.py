"""Apps from a database (shared/apps/database.py): one behaviour suite over PostgreSQL and MariaDB,
each a real server with a database created for the test in soketi's table layout.

Queries are counted by wrapping the real source, to show that misses are remembered and that
concurrent lookups share one query. The registry's clock is a manual one where a test needs "later".
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence

import pytest

from shared.apps.config import ConfigError
from shared.apps.database import AppSource, DatabaseAppRegistry, Row, source_for
from shared.apps.origins import OriginPolicy
from shared.apps.registry import AppChanges, AppsUnavailable
from tests.appsdb import KINDS, AppsDatabase, apps_database, soketi_row
from tests.helpers import REPO
from tests.tcpproxy import FailoverProxy
from tests.unit.fakes import ManualClock

REFRESH_S = 10.0


@pytest.fixture(params=KINDS)
async def db(request: pytest.FixtureRequest) -> AsyncIterator[AppsDatabase]:
    async for made in apps_database(request.param):
        yield made


class Counting:
    """The real source, with its queries counted."""

    def __init__(self, source: AppSource) -> None:
        self.source = source
        self.name = source.name
        self.queries = 0

    async def start(self) -> None:
        await self.source.start()

    async def close(self) -> None:
        await self.source.close()

    async def by_key(self, key: str) -> Row | None:
        self.queries += 1
        return await self.source.by_key(key)

    async def by_id(self, app_id: str) -> Row | None:
        self.queries += 1
        return await self.source.by_id(app_id)

    async def by_ids(self, app_ids: Sequence[str]) -> list[Row]:
        self.queries += 1
        return await self.source.by_ids(app_ids)


async def registry_for(url: str, clock: ManualClock | None = None) -> tuple[DatabaseAppRegistry, Counting]:
    source = Counting(source_for(url))
    registry = DatabaseAppRegistry(source, refresh_s=REFRESH_S, clock=clock or ManualClock())
    await registry.start()
    return registry, source


async def test_soketi_rows_by_key_and_by_id(db: AppsDatabase) -> None:
    await db.insert(soketi_row("1", "key-1", "secret-1", max_connections=200, enable_client_messages=1,
                               max_read_req_per_sec=6, max_event_payload_in_kb=50, enable_user_authentication=1,
                               webhooks=[{"url": "https://hooks.example/h", "event_types": ["channel_occupied"]}],
                               allowed_origins=["https://*.example.com"]))
    registry, source = await registry_for(db.url)
    try:
        by_key = await registry.by_key("key-1")
        assert by_key is not None and await registry.by_id("1") is by_key
        assert source.queries == 1  # the id lookup was served from the cache
        assert (by_key.id, by_key.secret, by_key.max_connections, by_key.enable_client_messages) == (
            "1", "secret-1", 200, True)
        assert (by_key.max_read_req_per_sec, by_key.max_backend_events_per_sec, by_key.max_event_payload_in_kb) == (
            6, -1, 50)
        assert by_key.enable_user_authentication is True and by_key.enabled is True
        assert by_key.max_presence_members_per_channel == 100  # NULL: the default
        assert [h.url for h in by_key.webhooks] == ["https://hooks.example/h"]
        assert by_key.allowed_origins == OriginPolicy(["https://*.example.com"])
        other, _ = await registry_for(db.url)
        assert await other.by_id("1") == by_key  # the API's path (by id) finds the same app
        await other.close()
    finally:
        await registry.close()


async def test_unknown_keys_are_remembered_and_lookups_share_a_query(db: AppsDatabase) -> None:
    await db.insert(soketi_row("1", "key-1", "secret-1"))
    clock = ManualClock()
    registry, source = await registry_for(db.url, clock)
    try:
        assert [await registry.by_key("wrong-key") for _ in range(20)] == [None] * 20
        assert source.queries == 1
        found = await asyncio.gather(*(registry.by_key("key-1") for _ in range(20)))
        assert all(app is found[0] and app is not None for app in found)
        assert source.queries == 2
        # A row added later is found once the miss is forgotten (one refresh interval).
        await db.insert(soketi_row("2", "wrong-key", "secret-2"))
        assert await registry.by_key("wrong-key") is None
        clock.advance(REFRESH_S)
        app = await registry.by_key("wrong-key")
        assert app is not None and app.id == "2"
    finally:
        await registry.close()


async def test_refresh_reports_changed_disabled_and_deleted_apps(db: AppsDatabase) -> None:
    for i in range(3):
        await db.insert(soketi_row(str(i), f"key-{i}", "secret"))
    registry, source = await registry_for(db.url)
    heard: list[AppChanges] = []
    registry.add_listener(heard.append)
    try:
        for i in range(3):
            assert await registry.by_key(f"key-{i}") is not None
        await db.update("0", max_backend_events_per_sec=25)
        await db.update("1", enabled=0)
        await db.delete("2")
        before = source.queries
        changes = await registry.refresh()
        assert source.queries == before + 1  # one query for all cached apps
        assert heard == [changes] and changes.removed == ["2"]
        assert changes.updated["0"].max_backend_events_per_sec == 25 and not changes.updated["1"].enabled
        assert (await registry.by_key("key-0")) is changes.updated["0"]
        assert not await registry.refresh()  # nothing changed since
    finally:
        await registry.close()


async def test_a_row_herald_can_not_use_is_not_served(db: AppsDatabase, caplog: pytest.LogCaptureFixture) -> None:
    await db.insert(soketi_row("1", "key-1", "secret", max_event_batch_size=0))
    registry, _ = await registry_for(db.url)
    try:
        with caplog.at_level(logging.ERROR, "herald.apps"):
            assert await registry.by_key("key-1") is None
        assert "app 1: field 'max_event_batch_size': must be at least 1" in caplog.text
    finally:
        await registry.close()


async def test_changed_key_is_followed(db: AppsDatabase) -> None:
    await db.insert(soketi_row("1", "old-key", "secret"))
    registry, _ = await registry_for(db.url)
    try:
        assert await registry.by_key("old-key") is not None
        await db.update("1", key="new-key")
        await registry.refresh()
        assert await registry.by_key("new-key") is not None
    finally:
        await registry.close()


async def test_outage_keeps_cached_apps_and_reports_lookups_as_unavailable(db: AppsDatabase) -> None:
    await db.insert(soketi_row("1", "key-1", "secret"))
    port = 5432 if db.kind == "postgres" else 3306
    proxy = await FailoverProxy([port]).start()
    url = db.url.replace(f":{port}/", f":{proxy.port}/")
    registry, _ = await registry_for(url)
    try:
        assert await registry.by_key("key-1") is not None
        await proxy.stop()
        assert await registry.by_key("key-1") is not None  # cached
        with pytest.raises(AppsUnavailable):
            await registry.by_key("other-key")
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error type
            await registry.refresh()
        assert await registry.by_id("1") is not None  # a failed refresh keeps the cache
    finally:
        await registry.close()


async def test_start_fails_with_a_message_naming_the_table(db: AppsDatabase) -> None:
    registry = DatabaseAppRegistry(source_for(db.url, table="no_such_table"))
    with pytest.raises(ConfigError, match=r"cannot read apps from .*table no_such_table"):
        await registry.start()
    await registry.close()


@pytest.mark.parametrize(("url", "why"), [("redis://x/0", "must start with postgres://"),
                                           ("mysql://root@127.0.0.1:3306", "names no database")])
def test_bad_database_urls(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        source_for(url)


def test_table_names_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"must be a name or schema\.name"):
        source_for("postgres://x/y", table="apps; DROP TABLE apps")




async def test_cli_stops_with_a_message_when_the_table_can_not_be_read(db: AppsDatabase) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald", "serve", "--port", "1", "--apps-db", db.url, "--apps-db-table", "missing",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err
    assert err.decode().startswith("herald: configuration error: cannot read apps from ")
    assert "table missing" in err.decode() and "Traceback" not in err.decode()
