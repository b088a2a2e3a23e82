"""Apps from a PostgreSQL or MySQL/MariaDB table in soketi's layout (docs/apps.md, "Apps from a database").

Lookups are served from a cache; a miss asks the database once (concurrent lookups of the same key
share one query) and a key or id the database doesn't know is remembered as unknown for
`refresh_s`, so clients with a wrong key can't hammer the database. Every `refresh_s` seconds one
query per 500 cached apps re-reads them: changed apps reach the node's listeners (new limits apply,
sockets of disabled apps close with 4003, of deleted apps with 4001). So a change made in the table
shows within `refresh_s` on every node.

While the database is unreachable, cached apps keep working; a lookup that needs the database raises
AppsUnavailable (the handshake answers 4100 so pusher-js retries, the HTTP API 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from shared.apps.config import AppConfig, ConfigError, app_from_mapping
from shared.apps.registry import AppChanges, AppRegistry, AppsUnavailable
from shared.clock import Clock

log = logging.getLogger("herald.apps")

REFRESH_S = 10.0
QUERY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
POOL_MAX_CONNECTIONS = 4
# Apps re-read per refresh query; and how many unknown keys/ids are remembered at most.
REFRESH_CHUNK = 500
MAX_REMEMBERED_MISSES = 10_000
DEFAULT_TABLE = "apps"
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

Row = Mapping[str, Any]


class AppSource(Protocol):
    """One database table of apps (`postgres_impl`, `mysql_impl`): rows as column -> value."""

    name: str  # for log lines: the table and the server, without the password

    async def start(self) -> None:
        """Connect and check that the table can be read; raise on failure."""

    async def close(self) -> None: ...

    async def by_key(self, key: str) -> Row | None: ...

    async def by_id(self, app_id: str) -> Row | None: ...

    async def by_ids(self, app_ids: Sequence[str]) -> list[Row]: ...


def check_table_name(table: str) -> list[str]:
    """The parts of `table` or `schema.table`; anything else is refused (it is put into SQL)."""
    if not _TABLE_NAME.match(table):
        raise ConfigError(f"apps table name '{table}' must be a name or schema.name (letters, digits, _)")
    return table.split(".")


def redact(url: str) -> str:
    """The URL without its password, for log lines and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def source_for(url: str, table: str = DEFAULT_TABLE) -> AppSource:
    """The app source for a `postgres://` / `postgresql://` or `mysql://` / `mariadb://` URL."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgres", "postgresql"):
        from shared.apps.postgres_impl import PostgresAppSource

        return PostgresAppSource(url, table)
    if scheme in ("mysql", "mariadb"):
        from shared.apps.mysql_impl import MysqlAppSource

        return MysqlAppSource(url, table)
    raise ConfigError(f"apps database URL '{redact(url)}' must start with postgres://, postgresql://, "
                      "mysql:// or mariadb://")


class DatabaseAppRegistry(AppRegistry):
    def __init__(self, source: AppSource, refresh_s: float = REFRESH_S, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.clock = clock
        self._misses: dict[tuple[str, str], float] = {}  # (kind, value) -> unknown until
        self._pending: dict[tuple[str, str], asyncio.Future[AppConfig | None]] = {}
        self._bad_rows: dict[str, str] = {}  # app id -> the error last logged for its row
        self._task: asyncio.Task[None] | None = None
        self._down = False

    # -- lookups ----------------------------------------------------------------------------------

    async def _missing_key(self, key: str) -> AppConfig | None:
        return await self._lookup("key", key)

    async def _missing_id(self, app_id: str) -> AppConfig | None:
        return await self._lookup("id", app_id)

    async def _lookup(self, kind: str, value: str) -> AppConfig | None:
        wanted = (kind, value)
        until = self._misses.get(wanted)
        if until is not None:
            if self.clock() < until:
                return None
            del self._misses[wanted]
        pending = self._pending.get(wanted)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(kind, value))
            self._pending[wanted] = pending
            pending.add_done_callback(lambda fut: self._fetched(wanted, fut))
        # Shielded: a handshake that gives up must not cancel the query others wait for.
        return await asyncio.shield(pending)

    def _fetched(self, wanted: tuple[str, str], fut: asyncio.Future[AppConfig | None]) -> None:
        self._pending.pop(wanted, None)
        if not fut.cancelled():
            fut.exception()  # retrieved here, so nobody waiting is not an "unretrieved" warning

    async def _fetch(self, kind: str, value: str) -> AppConfig | None:
        query = self.source.by_key if kind == "key" else self.source.by_id
        try:
            row = await asyncio.wait_for(query(value), QUERY_TIMEOUT_S)
        except Exception as exc:
            self._report_down(exc)
            raise AppsUnavailable(f"apps database unavailable: {type(exc).__name__}: {exc}") from None
        self._report_up()
        app = self._parse(row) if row is not None else None
        if app is None:
            if len(self._misses) >= MAX_REMEMBERED_MISSES:
                self._misses.pop(next(iter(self._misses)))  # the oldest
            self._misses[(kind, value)] = self.clock() + self.refresh_s
            return None
        # The row may be newer than what is cached under the other lookup path.
        old = self._by_id.get(app.id)
        if old is not None and old == app:
            return old
        self._put(app)
        if old is not None:
            self._notify(AppChanges(updated={app.id: app}))
        return app

    def _parse(self, row: Row) -> AppConfig | None:
        app_id = str(row.get("id", "?"))
        try:
            app = app_from_mapping(row, self.source.name, 0, row=True)
        except ConfigError as exc:
            if self._bad_rows.get(app_id) != str(exc):
                self._bad_rows[app_id] = str(exc)
                log.error("app row not used: %s", exc)
            return None
        self._bad_rows.pop(app_id, None)
        return app

    def _put(self, app: AppConfig) -> None:
        old = self._by_id.get(app.id)
        if old is not None and old.key != app.key and self._by_key.get(old.key) is old:
            del self._by_key[old.key]
        self._by_id[app.id] = app
        self._by_key[app.key] = app
        self._misses.pop(("key", app.key), None)
        self._misses.pop(("id", app.id), None)

    def _drop(self, app_id: str) -> None:
        old = self._by_id.pop(app_id, None)
        if old is not None and self._by_key.get(old.key) is old:
            del self._by_key[old.key]

    # -- refresh ----------------------------------------------------------------------------------

    async def refresh(self) -> AppChanges:
        """Re-read every cached app; listeners hear what changed. Raises when the database is away."""
        ids = list(self._by_id)
        rows: list[Row] = []
        for i in range(0, len(ids), REFRESH_CHUNK):
            rows += await asyncio.wait_for(self.source.by_ids(ids[i : i + REFRESH_CHUNK]), QUERY_TIMEOUT_S)
        found = {str(row.get("id")): row for row in rows}
        changes = AppChanges()
        for app_id in ids:
            old = self._by_id.get(app_id)
            if old is None:
                continue
            row = found.get(app_id)
            if row is None:
                self._drop(app_id)
                changes.removed.append(app_id)
                continue
            new = self._parse(row)
            if new is not None and new != old:  # an unusable row keeps the running config
                self._put(new)
                changes.updated[app_id] = new
        now = self.clock()
        self._misses = {k: until for k, until in self._misses.items() if until > now}
        if changes:
            log.info("apps from %s refreshed: %s", self.source.name, changes.summary())
        self._notify(changes)
        return changes

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:
                self._report_down(exc)
            else:
                self._report_up()

    def _report_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning("apps database %s unavailable (%s: %s); cached apps keep working",
                        self.source.name, type(exc).__name__, exc)

    def _report_up(self) -> None:
        if self._down:
            self._down = False
            log.info("apps database %s reachable again", self.source.name)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.source.start(), CONNECT_TIMEOUT_S + QUERY_TIMEOUT_S)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot read apps from {self.source.name}: {type(exc).__name__}: {exc}") from exc
        log.info("apps from %s (refreshed every %gs)", self.source.name, self.refresh_s)
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_forever(), name="apps-db-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.source.close()

    async def reload(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.error("apps not refreshed from %s (SIGHUP): %s: %s", self.source.name, type(exc).__name__, exc)
