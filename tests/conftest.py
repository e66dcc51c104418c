"""Shared fixtures: fake providers as real aiohttp servers on 127.0.0.1, and gateways built on them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from tests.fakes.postgres import PostgresServer, postgres_server
from tests.fakes.providers import FakeProvider, Handler, default_answer, start_provider
from tests.fakes.tables import table_of


@pytest.fixture
async def fake_provider(aiohttp_server: Any) -> Callable[..., Awaitable[FakeProvider]]:
    async def make(routes: Mapping[str, Handler] | None = None, default: Handler = default_answer) -> FakeProvider:
        return await start_provider(aiohttp_server, default, routes)

    return make


@pytest.fixture
def gateway(aiohttp_client: Any) -> Callable[..., Awaitable[TestClient[web.Request, web.Application]]]:
    async def make(
        *entries: dict[str, Any], env: Mapping[str, str] | None = None, table: ProviderTable | None = None
    ) -> TestClient[web.Request, web.Application]:
        environ = dict(env or {})
        settings = Settings.from_env(environ)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            create_app(settings, table or table_of(*entries, env=environ))
        )
        return client

    return make


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (the usage store's tests, the registry's replicas); each test
    makes a database of its own on it."""
    with postgres_server() as server:
        yield server
