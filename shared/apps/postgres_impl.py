"""`AppSource` over PostgreSQL (asyncpg, the `herald-channels[postgres]` extra): soketi's `apps` table, read
with `SELECT *` so extra columns Herald knows (`allowed_origins`, `cache_ttl_s`, ...) are used too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.apps.config import ConfigError
from shared.apps.database import CONNECT_TIMEOUT_S, POOL_MAX_CONNECTIONS, QUERY_TIMEOUT_S, Row, check_table_name, redact


class PostgresAppSource:
    def __init__(self, url: str, table: str) -> None:
        self.url = url
        quoted = ".".join(f'"{part}"' for part in check_table_name(table))
        self.name = f"PostgreSQL table {table} at {redact(url)}"
        self._select = f"SELECT * FROM {quoted}"
        self._pool: Any = None

    async def start(self) -> None:
        try:
            import asyncpg
        except ImportError:
            raise ConfigError("PostgreSQL apps need the asyncpg package: "
                              "pip install 'herald-channels[postgres]'") from None
        # statement_cache_size=0: works behind PgBouncer in transaction mode too; these are few, cheap queries.
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=POOL_MAX_CONNECTIONS, timeout=CONNECT_TIMEOUT_S,
            command_timeout=QUERY_TIMEOUT_S, statement_cache_size=0,
        )
        await self._pool.fetch(f"{self._select} LIMIT 0")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def by_key(self, key: str) -> Row | None:
        row = await self._pool.fetchrow(f'{self._select} WHERE "key" = $1 LIMIT 1', key)
        return dict(row) if row is not None else None

    async def by_id(self, app_id: str) -> Row | None:
        row = await self._pool.fetchrow(f"{self._select} WHERE id::text = $1 LIMIT 1", app_id)
        return dict(row) if row is not None else None

    async def by_ids(self, app_ids: Sequence[str]) -> list[Row]:
        rows = await self._pool.fetch(f"{self._select} WHERE id::text = ANY($1::text[])", list(app_ids))
        return [dict(r) for r in rows]
