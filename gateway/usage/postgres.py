"""The PostgreSQL store (several replicas, one database): an asyncpg pool, batches in one transaction, and the
migrations taken under an advisory lock so replicas starting together apply each one once."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from yarl import URL

from gateway.usage import schema
from gateway.usage.record import COLUMNS, TOOL_COLUMNS
from gateway.usage.schema import LATEST, Dialect
from gateway.usage.store import Row

# The advisory lock's key: any constant of this gateway's own (the bytes of "llmgwuse").
MIGRATION_LOCK = 0x6C6C6D6777757365
CONNECT_TIMEOUT = 5.0
# A statement running longer fails, and the writer retries later: a stuck database never holds the writer forever.
COMMAND_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
_INSERT = (
    f"INSERT INTO usage_requests ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
)
_PLACEHOLDER = re.compile(r"\?")
# Failures of the batch itself, not of the server: retrying cannot help.
_BAD_BATCH = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)


def placeholders(sql: str) -> str:
    """`?` placeholders (the queries' own form) as PostgreSQL's `$1, $2, ...`."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresStore:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self._url = url
        parsed = URL(url)
        self.where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}{parsed.path}"
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def _ensure_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=4, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
            )
        return self._pool

    async def open(self) -> None:
        await self._ensure_pool()
        await self.migrate()

    async def migrate(self, target: int = LATEST) -> int:
        pool = await self._ensure_pool()
        async with pool.acquire() as conn, conn.transaction():
            # Held until this transaction ends: another replica migrating waits here, then finds nothing to do.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(schema.versions_table(self.dialect))
            applied = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM usage_migrations"))
            for migration in schema.pending(applied, target):
                for statement in schema.statements(migration, self.dialect):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO usage_migrations (version, applied_at) VALUES ($1, $2)", migration.version, time.time()
                )
                applied = migration.version
        return applied

    async def version(self) -> int:
        pool = await self._ensure_pool()
        return int(await pool.fetchval("SELECT coalesce(max(version), 0) FROM usage_migrations"))

    async def insert(self, rows: Sequence[Row], tool_rows: Sequence[Row] = ()) -> None:
        pool = await self._ensure_pool()
        async with pool.acquire() as conn:
            # COPY, binary: several times the rate of INSERTs, in one statement (so one transaction).
            if not tool_rows:
                await conn.copy_records_to_table("usage_requests", records=rows, columns=COLUMNS)
                return
            async with conn.transaction():  # a batch with its tool calls: both tables, or neither
                await conn.copy_records_to_table("usage_requests", records=rows, columns=COLUMNS)
                await conn.copy_records_to_table("usage_tool_calls", records=tool_rows, columns=TOOL_COLUMNS)

    async def delete_before(self, ts: float, batch: int = 5000) -> int:
        total = await self._delete_before("usage_requests", ts, batch)
        await self._delete_before("usage_tool_calls", ts, batch)
        return total

    async def _delete_before(self, table: str, ts: float, batch: int) -> int:
        pool = await self._ensure_pool()
        total = 0
        while True:
            status = await pool.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < $1 LIMIT $2)", ts, batch
            )
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < batch:
                return total

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        pool = await self._ensure_pool()
        return [tuple(r) for r in await pool.fetch(placeholders(sql), *params)]

    async def write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        pool = await self._ensure_pool()
        changed: list[int] = []
        async with pool.acquire() as conn, conn.transaction():
            for sql, params in statements:
                status = await conn.execute(placeholders(sql), *params)
                # "INSERT 0 1", "UPDATE 2", "DELETE 0": the last word is the count.
                last = status.rsplit(" ", 1)[-1]
                changed.append(int(last) if last.isdigit() else 0)
        return changed

    def transient(self, exc: BaseException) -> bool:
        return not isinstance(exc, _BAD_BATCH)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                # close() waits for connections in use: a hung server would hold shutdown.
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pool.close()
            except Exception:  # a server gone or hung: terminate what close() could not end politely
                pool.terminate()
