"""`AppSource` over MySQL or MariaDB (aiomysql, the `herald-channels[mysql]` extra): soketi's `apps` table, read
with `SELECT *` so extra columns Herald knows (`allowed_origins`, `cache_ttl_s`, ...) are used too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.apps.config import ConfigError
from shared.apps.database import CONNECT_TIMEOUT_S, POOL_MAX_CONNECTIONS, Row, check_table_name, redact

DEFAULT_PORT = 3306


class MysqlAppSource:
    def __init__(self, url: str, table: str) -> None:
        self.url = url
        quoted = ".".join(f"`{part}`" for part in check_table_name(table))
        self.name = f"MySQL table {table} at {redact(url)}"
        self._select = f"SELECT * FROM {quoted}"
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if not database:
            raise ConfigError(f"apps database URL '{redact(url)}' names no database (mysql://user@host/db)")
        self._options: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1", "port": parts.port or DEFAULT_PORT,
            "user": unquote(parts.username or "root"), "password": unquote(parts.password or ""),
            "db": unquote(database), "connect_timeout": CONNECT_TIMEOUT_S, "charset": "utf8mb4",
        }
        self._pool: Any = None

    async def start(self) -> None:
        try:
            import aiomysql
        except ImportError:
            raise ConfigError("MySQL apps need the aiomysql package: pip install 'herald-channels[mysql]'") from None
        self._dict_cursor = aiomysql.DictCursor
        # autocommit: without it a pooled connection keeps one REPEATABLE READ snapshot and never
        # sees later changes to the table.
        self._pool = await aiomysql.create_pool(minsize=1, maxsize=POOL_MAX_CONNECTIONS, autocommit=True,
                                                pool_recycle=3600, **self._options)
        await self._query(f"{self._select} LIMIT 0", ())

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def _query(self, sql: str, args: Sequence[Any]) -> list[Row]:
        async with self._pool.acquire() as conn, conn.cursor(self._dict_cursor) as cur:
            await cur.execute(sql, tuple(args))
            return list(await cur.fetchall())

    async def by_key(self, key: str) -> Row | None:
        rows = await self._query(f"{self._select} WHERE `key` = %s LIMIT 1", (key,))
        return rows[0] if rows else None

    async def by_id(self, app_id: str) -> Row | None:
        rows = await self._query(f"{self._select} WHERE `id` = %s LIMIT 1", (app_id,))
        return rows[0] if rows else None

    async def by_ids(self, app_ids: Sequence[str]) -> list[Row]:
        if not app_ids:
            return []
        marks = ", ".join(["%s"] * len(app_ids))
        return await self._query(f"{self._select} WHERE `id` IN ({marks})", app_ids)
