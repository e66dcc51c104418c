"""What a usage store is (the writer, retention and queries see only this), and which one a USAGE_STORE value
names: a postgresql:// URL, or a SQLite file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.usage.schema import LATEST, Dialect

Row = tuple[Any, ...]


class Store(Protocol):
    dialect: Dialect
    # Where it is, for log lines: the file, or the server without user and password.
    where: str

    async def open(self) -> None:
        """Connect and apply the missing migrations."""

    async def migrate(self, target: int = LATEST) -> int:
        """Apply the migrations up to `target`; the version the store is at."""

    async def version(self) -> int: ...

    async def insert(self, rows: Sequence[Row], tool_rows: Sequence[Row] = ()) -> None:
        """Write request rows (in record.COLUMNS order) and tool-call rows (record.TOOL_COLUMNS) in one
        transaction."""

    async def delete_before(self, ts: float, batch: int = 5000) -> int:
        """Delete rows older than `ts` (epoch seconds), requests and tool calls, `batch` at a time so no lock is
        held long; the requests deleted."""

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """A read; `sql` uses `?` placeholders, whatever the store."""

    async def write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Statements (`?` placeholders) in one transaction; the rows each one changed."""

    def transient(self, exc: BaseException) -> bool:
        """May writing these rows succeed later (a server down, a lock, a read-only database), or is the batch
        itself bad (then it is dropped, not retried forever)?"""

    async def close(self) -> None: ...


def open_store(url: str) -> Store:
    """The store a USAGE_STORE value names (settings.py has checked it); not connected yet."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from gateway.usage.postgres import PostgresStore

        return PostgresStore(url)
    from gateway.usage.sqlite import SqliteStore

    return SqliteStore(url[len("sqlite://") :] if scheme == "sqlite" else url)
