"""The queue and the writer under faults, through a real gateway: a full queue drops and counts (one log line per
incident), a store held by another writer's lock delays rows but never requests, and shutdown writes what is
queued."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.config.settings import Settings
from gateway.usage.service import USAGE
from tests.fakes.bodies import chat
from tests.fakes.gateways import Gateway, start_gateway, telemetry_settings
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import usage_table
from tests.fakes.telemetry import captured_logs, events_named, samples
from tests.fakes.usage import store_ready, written


@pytest.fixture
async def upstream(aiohttp_server: Any) -> ChatProvider:
    return await ChatProvider().start(aiohttp_server)


async def chats(gateway: Gateway, count: int) -> None:
    for _ in range(count):
        response = await gateway.client.post("/v1/chat/completions", json=chat("fake/plain"))
        assert response.status == 200
        assert (await response.json())["usage"]["prompt_tokens"] == 11


def rows_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM usage_requests").fetchone()[0])


async def test_a_full_queue_drops_counts_logs_once_and_shutdown_writes_the_rest(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    db = tmp_path / "usage.db"
    # A batch never fills and the interval never passes during the test: the queue only fills.
    settings = telemetry_settings(
        usage_store=str(db), usage_queue_size=3, usage_batch_size=1000, usage_flush_interval=3600.0
    )
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), settings)
    await store_ready(gateway.app)
    with captured_logs() as logs:
        await chats(gateway, 10)
    assert len(events_named(logs, "usage queue full: rows are dropped until the store catches up")) == 1
    found = await samples(gateway.app)
    assert found.value("llmgw_usage_rows_dropped_total", reason="queue_full") == 7
    assert found.value("llmgw_usage_queue_depth") == 3
    assert found.value("llmgw_usage_rows_written_total") == 0
    await gateway.client.close()  # the app's cleanup: the queue is written before the store closes
    assert rows_in(db) == 3


async def test_a_store_held_by_another_writer_delays_rows_never_requests(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    db = tmp_path / "usage.db"
    gateway = await start_gateway(
        aiohttp_client, usage_table(upstream.url), Settings(usage_store=str(db), usage_flush_interval=0.02)
    )
    await store_ready(gateway.app)
    await chats(gateway, 2)
    await written(gateway.app, 2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a slow writer elsewhere: the gateway's batches wait, then fail and retry
    try:
        with captured_logs() as logs:
            await chats(gateway, 5)
            counters = gateway.app[USAGE].writer.counters
            for _ in range(1000):
                if counters.write_errors:
                    break
                await asyncio.sleep(0.01)
        assert counters.write_errors >= 1 and counters.written == 2 and counters.dropped == 0
        failed = events_named(logs, "usage store write failed: rows wait in the queue and are retried")
        assert len(failed) == 1 and "database is locked" in failed[0]["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await written(gateway.app, 7)
    assert rows_in(db) == 7 and gateway.app[USAGE].writer.counters.dropped == 0
