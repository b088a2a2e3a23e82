"""Real PostgreSQL and MariaDB/MySQL databases for the apps-database tests: each test gets a database
of its own (created and dropped here) with soketi's `apps` table layout.

The servers are the machine's (scripts/_prereqs.sh installs and starts them where it can); the URLs
can be changed with HERALD_TEST_POSTGRES_URL / HERALD_TEST_MYSQL_URL. When a server can't be
reached, the tests using it skip and say why.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.soketi_apps import SQL_COLUMNS

POSTGRES_URL = os.environ.get("HERALD_TEST_POSTGRES_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("HERALD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")
KINDS = ["postgres", "mysql"]

# soketi's table, column for column (its test schema's types: integer counters, 0/1 smallint or
# tinyint booleans, a JSON webhooks column, nullable limits), plus `allowed_origins`, the one
# Herald column a soketi table doesn't have (optional: tables without it work).
POSTGRES_TABLE = """CREATE TABLE apps (
    id varchar(255) PRIMARY KEY, "key" varchar(255) NOT NULL, secret varchar(255) NOT NULL,
    max_connections integer NOT NULL, enable_client_messages smallint NOT NULL, "enabled" smallint NOT NULL,
    max_backend_events_per_sec integer NOT NULL, max_client_events_per_sec integer NOT NULL,
    max_read_req_per_sec integer NOT NULL, webhooks json, max_presence_members_per_channel integer,
    max_presence_member_size_in_kb integer, max_channel_name_length integer, max_event_channels_at_once integer,
    max_event_name_length integer, max_event_payload_in_kb integer, max_event_batch_size integer,
    enable_user_authentication smallint NOT NULL, allowed_origins json)"""
MYSQL_TABLE = """CREATE TABLE apps (
    `id` varchar(255) NOT NULL, `key` varchar(255) NOT NULL, `secret` varchar(255) NOT NULL,
    `max_connections` integer NOT NULL, `enabled` tinyint(1) NOT NULL, `enable_client_messages` tinyint(1) NOT NULL,
    `max_backend_events_per_sec` integer NOT NULL, `max_client_events_per_sec` integer NOT NULL,
    `max_read_req_per_sec` integer NOT NULL, `webhooks` json, `max_presence_members_per_channel` integer NULL,
    `max_presence_member_size_in_kb` integer NULL, `max_channel_name_length` integer NULL,
    `max_event_channels_at_once` integer NULL, `max_event_name_length` integer NULL,
    `max_event_payload_in_kb` integer NULL, `max_event_batch_size` integer NULL,
    `enable_user_authentication` tinyint(1) NOT NULL, `allowed_origins` json, PRIMARY KEY (`id`))"""
COLUMNS = [*SQL_COLUMNS, "allowed_origins"]


def soketi_row(app_id: str, key: str, secret: str, **values: Any) -> dict[str, Any]:
    """A row as soketi's fixtures insert it: counters -1, booleans 0/1, webhooks '[]', limits NULL."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({"id": app_id, "key": key, "secret": secret, "max_connections": -1, "enable_client_messages": 1,
                "enabled": 1, "max_backend_events_per_sec": -1, "max_client_events_per_sec": -1,
                "max_read_req_per_sec": -1, "webhooks": "[]", "enable_user_authentication": 0})
    row.update(values)
    for name in ("webhooks", "allowed_origins"):
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name])
    return row


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


class AppsDatabase:
    """One database with an `apps` table; `url` is what `herald --apps-db` gets."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"herald_test_{uuid.uuid4().hex[:12]}"
        self.admin_url = POSTGRES_URL if kind == "postgres" else MYSQL_URL
        self.url = _with_database(self.admin_url, self.name)
        self._conn: Any = None

    def _q(self, name: str) -> str:
        return f'"{name}"' if self.kind == "postgres" else f"`{name}`"

    async def create(self) -> AppsDatabase:
        if self.kind == "postgres":
            import asyncpg

            admin = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                await admin.execute(f'CREATE DATABASE "{self.name}"')
            finally:
                await admin.close()
            self._conn = await asyncpg.connect(self.url, timeout=5)
            await self._conn.execute(POSTGRES_TABLE)
        else:
            import aiomysql

            self._conn = await aiomysql.connect(autocommit=True, connect_timeout=5, **_mysql_options(self.admin_url))
            await self._execute(f"CREATE DATABASE `{self.name}`")
            await self._execute(f"USE `{self.name}`")
            await self._execute(MYSQL_TABLE)
        return self

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        if self.kind == "postgres":
            await self._conn.execute(sql, *args)
        else:
            async with self._conn.cursor() as cur:
                await cur.execute(sql, tuple(args))

    def _mark(self, i: int) -> str:
        return f"${i}" if self.kind == "postgres" else "%s"

    async def insert(self, row: Mapping[str, Any]) -> None:
        names = ", ".join(self._q(c) for c in row)
        marks = ", ".join(self._mark(i + 1) for i in range(len(row)))
        await self._execute(f"INSERT INTO apps ({names}) VALUES ({marks})", list(row.values()))

    async def update(self, app_id: str, **values: Any) -> None:
        sets = ", ".join(f"{self._q(c)} = {self._mark(i + 1)}" for i, c in enumerate(values))
        await self._execute(f"UPDATE apps SET {sets} WHERE id = {self._mark(len(values) + 1)}",
                            [*values.values(), app_id])

    async def delete(self, app_id: str) -> None:
        await self._execute(f"DELETE FROM apps WHERE id = {self._mark(1)}", [app_id])

    async def drop(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            if self._conn is not None:
                await self._conn.close()
            admin = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await admin.close()
        elif self._conn is not None:
            await self._execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            self._conn.close()


def _mysql_options(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306, "user": parts.username or "root",
            "password": parts.password or ""}


async def unreachable(kind: str) -> str | None:
    """Why this kind's test server can't be used, or None."""
    try:
        db = AppsDatabase(kind)
        if kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(db.admin_url, timeout=3)
            await conn.close()
        else:
            import aiomysql

            conn = await aiomysql.connect(connect_timeout=3, **_mysql_options(db.admin_url))
            conn.close()
    except Exception as exc:
        url = POSTGRES_URL if kind == "postgres" else MYSQL_URL
        return f"no {kind} server at {url} ({type(exc).__name__}: {exc}); scripts/_prereqs.sh installs one as root"
    return None


async def apps_database(kind: str) -> AsyncIterator[AppsDatabase]:
    """Fixture body: a fresh database of this kind, dropped afterwards; skips (saying why) without a server."""
    reason = await unreachable(kind)
    if reason:
        pytest.skip(reason)
    db = await AppsDatabase(kind).create()
    try:
        yield db
    finally:
        await db.drop()
