"""The usage-store suite runs over both stores: a SQLite file, and a database of its own on one real PostgreSQL
server started for the session (tests/fakes/postgres.py, the `pg_server` fixture of tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.usage.store import Store, open_store
from tests.fakes.postgres import PostgresServer

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """The URL of a fresh, empty store of each kind (a call makes it; every call in a test gives the same one)."""
    made: list[str] = []

    def url() -> str:
        if not made:
            if request.param == "sqlite":
                made.append(str(tmp_path / "usage.db"))
            else:
                server: PostgresServer = request.getfixturevalue("pg_server")
                name = f"usage_{next(_databases)}"
                server.psql(f"CREATE DATABASE {name}")
                made.append(server.url(name))
        return made[0]

    return url


@pytest.fixture
async def store(store_url: Callable[[], str]) -> AsyncIterator[Store]:
    """An open, migrated store of each kind."""
    opened = open_store(store_url())
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
