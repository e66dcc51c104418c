"""PostgreSQL under the gateway: two gateways writing to one database, and a server stopped, made read-only or
held by a lock mid-run. Requests are never affected; failed writes are counted and retried; writing resumes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.usage.schema import LATEST
from gateway.usage.service import USAGE
from tests.fakes.bodies import chat
from tests.fakes.gateways import Gateway, start_gateway
from tests.fakes.postgres import PostgresServer, postgres_server
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import usage_table
from tests.fakes.telemetry import captured_logs, events_named
from tests.fakes.usage import store_ready, written


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of the test's own: these tests stop it, lock it, make it read-only."""
    with postgres_server() as started:
        yield started


@pytest.fixture
async def upstream(aiohttp_server: Any) -> ChatProvider:
    return await ChatProvider().start(aiohttp_server)


def pg_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"usage_store": url, "usage_api_enable": True, "usage_flush_interval": 0.02}
    values.update(overrides)
    return Settings(**values)


async def chats(gateway: Gateway, count: int) -> None:
    for _ in range(count):
        response = await gateway.client.post("/v1/chat/completions", json=chat("fake/plain"))
        assert response.status == 200
        assert (await response.json())["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


async def until(condition: Any, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


def stored(server: PostgresServer) -> int:
    return int(server.psql("SELECT count(*) FROM usage_requests"))


async def test_two_gateways_write_to_one_database(
    aiohttp_client: Any, upstream: ChatProvider, server: PostgresServer
) -> None:
    table = usage_table(upstream.url)
    # Started together: their migrations race, and the advisory lock lets one apply them.
    one, two = await asyncio.gather(
        start_gateway(aiohttp_client, table, pg_settings(server.url())),
        start_gateway(aiohttp_client, table, pg_settings(server.url())),
    )
    await asyncio.gather(store_ready(one.app), store_ready(two.app))
    assert server.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM usage_migrations") == ",".join(
        str(v) for v in range(1, LATEST + 1)
    )
    await asyncio.gather(chats(one, 5), chats(two, 4))
    await asyncio.gather(written(one.app, 5), written(two.app, 4))
    for gateway in (one, two):
        body = await (await gateway.client.get("/v1/usage")).json()
        assert body["summary"]["requests"] == 9 and body["summary"]["input_tokens"] == 99
    assert stored(server) == 9


async def test_a_server_stopped_mid_run(aiohttp_client: Any, upstream: ChatProvider, server: PostgresServer) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), pg_settings(server.url()))
    await store_ready(gateway.app)
    await chats(gateway, 2)
    await written(gateway.app, 2)
    counters = gateway.app[USAGE].writer.counters
    await asyncio.to_thread(server.stop, "fast")
    with captured_logs() as logs:
        await chats(gateway, 3)
        await until(lambda: counters.write_errors >= 1)
    assert counters.written == 2 and not counters.store_up
    assert len(events_named(logs, "usage store write failed: rows wait in the queue and are retried")) == 1
    # While it is down, the API says so in its envelope.
    down = await gateway.client.get("/v1/usage")
    assert down.status == 503 and (await down.json())["error"]["code"] == "usage_store_unavailable"
    await asyncio.to_thread(server.start)
    await written(gateway.app, 5)
    assert stored(server) == 5 and counters.dropped == 0 and counters.store_up


async def test_a_full_queue_while_the_server_is_down_drops_and_counts(
    aiohttp_client: Any, upstream: ChatProvider, server: PostgresServer
) -> None:
    settings = pg_settings(server.url(), usage_queue_size=2, usage_batch_size=1)
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), settings)
    await store_ready(gateway.app)
    await asyncio.to_thread(server.stop, "fast")
    await chats(gateway, 8)
    counters = gateway.app[USAGE].writer.counters
    # At most the queue and the batch being retried are kept; the rest is counted.
    assert counters.dropped >= 8 - 2 - 1
    await asyncio.to_thread(server.start)
    await until(lambda: counters.written + counters.dropped == 8)
    assert stored(server) == counters.written


async def test_a_read_only_server(aiohttp_client: Any, upstream: ChatProvider, server: PostgresServer) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), pg_settings(server.url()))
    await store_ready(gateway.app)
    counters = gateway.app[USAGE].writer.counters
    server.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    server.psql("SELECT pg_reload_conf()")
    try:
        with captured_logs() as logs:
            await chats(gateway, 3)
            await until(lambda: counters.write_errors >= 1)
        failed = events_named(logs, "usage store write failed: rows wait in the queue and are retried")
        assert "read-only transaction" in failed[0]["error"] and counters.written == 0
    finally:
        server.psql("ALTER SYSTEM RESET default_transaction_read_only")
        server.psql("SELECT pg_reload_conf()")
    await written(gateway.app, 3)
    assert stored(server) == 3


@pytest.fixture
async def locker(server: PostgresServer) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(server.url())
    try:
        yield conn
    finally:
        await conn.close()


async def test_a_table_held_by_a_lock(
    aiohttp_client: Any, upstream: ChatProvider, server: PostgresServer, locker: asyncpg.Connection[Any]
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), pg_settings(server.url()))
    await store_ready(gateway.app)
    await chats(gateway, 1)
    await written(gateway.app, 1)
    held = locker.transaction()
    await held.start()
    await locker.execute("LOCK TABLE usage_requests IN ACCESS EXCLUSIVE MODE")
    try:
        await chats(gateway, 3)  # answered while the writer waits on the lock
        # The writer's insert is waiting for the lock: PostgreSQL shows it.
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'usage_requests'::regclass"
        await until(lambda: server.psql(waiting) == "1")
        assert gateway.app[USAGE].writer.counters.written == 1
    finally:
        await held.rollback()
    await written(gateway.app, 4)
    assert stored(server) == 4
