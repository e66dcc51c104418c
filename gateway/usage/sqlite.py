"""The SQLite store (the embedded default): one file in WAL mode, a connection for the writer and one for reads,
so a query never waits behind a batch and a batch never behind a query."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.usage import schema
from gateway.usage.record import COLUMNS, TOOL_COLUMNS
from gateway.usage.schema import LATEST, Dialect
from gateway.usage.store import Row

# How long a statement waits for another writer's lock before it fails (and the writer retries later).
BUSY_TIMEOUT_MS = 2000
_INSERT = f"INSERT INTO usage_requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_INSERT_TOOLS = (
    f"INSERT INTO usage_tool_calls ({', '.join(TOOL_COLUMNS)}) VALUES ({', '.join('?' * len(TOOL_COLUMNS))})"
)
# Failures of the batch itself, not of the database: retrying cannot help.
_BAD_BATCH = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, ValueError, TypeError)


async def _enter_wal(db: aiosqlite.Connection) -> None:
    # Switching a new file to WAL needs its exclusive lock, and SQLite answers "database is locked" at once, without
    # the busy handler, when two connections race for it (each holds a shared lock the other must wait out): replicas
    # starting together on one file retry for as long as the busy timeout would have waited.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.01)


class SqliteStore:
    dialect: Dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # The writer's connection is shared by batches and retention: one transaction at a time on it.
        self._writing = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        # Autocommit mode (isolation_level None): transactions are begun and ended here, explicitly.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await _enter_wal(db)
            # In WAL mode NORMAL loses at most the last transactions on a power cut, never the file.
            await db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            await db.close()
            raise
        return db

    async def open(self) -> None:
        parent = Path(self.path).parent
        parent.mkdir(parents=True, exist_ok=True)
        if self._writer is None:
            self._writer = await self._connect()
        await self.migrate()
        if self._reader is None:
            self._reader = await self._connect()

    async def migrate(self, target: int = LATEST) -> int:
        db = self._writer
        if db is None:
            db = self._writer = await self._connect()
        # BEGIN IMMEDIATE takes the write lock first: two processes starting on one file migrate one after the other.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(schema.versions_table(self.dialect))
            applied = await self._applied(db)
            for migration in schema.pending(applied, target):
                for statement in schema.statements(migration, self.dialect):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO usage_migrations (version, applied_at) VALUES (?, ?)", (migration.version, time.time())
                )
                applied = migration.version
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return applied

    async def _applied(self, db: aiosqlite.Connection) -> int:
        async with db.execute("SELECT coalesce(max(version), 0) FROM usage_migrations") as cursor:
            found = await cursor.fetchone()
        return int(found[0]) if found is not None else 0

    async def version(self) -> int:
        db = self._writer or self._reader
        assert db is not None, "the store is not open"
        return await self._applied(db)

    async def insert(self, rows: Sequence[Row], tool_rows: Sequence[Row] = ()) -> None:
        db = self._writer
        if db is None:
            db = self._writer = await self._connect()
        async with self._writing:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany(_INSERT, rows)
                if tool_rows:
                    await db.executemany(_INSERT_TOOLS, tool_rows)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    async def delete_before(self, ts: float, batch: int = 5000) -> int:
        total = await self._delete_before("usage_requests", ts, batch)
        await self._delete_before("usage_tool_calls", ts, batch)
        return total

    async def _delete_before(self, table: str, ts: float, batch: int) -> int:
        db = self._writer
        assert db is not None, "the store is not open"
        total = 0
        while True:
            async with self._writing:
                cursor = await db.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < ? LIMIT ?)", (ts, batch)
                )
                deleted = cursor.rowcount
                await cursor.close()
            total += max(deleted, 0)
            if deleted < batch:
                return total

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        db = self._reader or self._writer
        assert db is not None, "the store is not open"
        async with db.execute(sql, tuple(params)) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]

    async def write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        db = self._writer
        assert db is not None, "the store is not open"
        changed: list[int] = []
        async with self._writing:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    cursor = await db.execute(sql, tuple(params))
                    changed.append(max(cursor.rowcount, 0))
                    await cursor.close()
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
        return changed

    def transient(self, exc: BaseException) -> bool:
        return not isinstance(exc, _BAD_BATCH)

    async def close(self) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None
