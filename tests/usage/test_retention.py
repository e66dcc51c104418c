"""Retention in the background, over both stores: at start-up, rows older than the age go, the rest stay."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.usage import query, retention
from gateway.usage.query import Filters
from gateway.usage.store import Store
from tests.fakes.telemetry import captured_logs, events_named
from tests.fakes.usage import BASE_TS, usage_row


async def test_old_rows_are_deleted_in_the_background(store: Store) -> None:
    await store.insert([usage_row(request_id=f"r{n}", ts=BASE_TS + n * 600) for n in range(12)])  # two hours
    everything = Filters(0, BASE_TS + 10 * 3600)
    with captured_logs() as logs:
        # An hour's retention, the clock two hours after the first row: the first hour's six rows go.
        task = asyncio.get_running_loop().create_task(
            retention.keep(store, 3600, every=3600, clock=lambda: BASE_TS + 7200)
        )
        try:
            # The line is logged after the deletes commit: wait for it, not for the rows (a query can see them
            # gone before the task has logged).
            for _ in range(500):
                if events_named(logs, "usage rows past retention deleted"):
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    rows, _ = await query.requests(store, everything, 100)
    assert [r["request_id"] for r in rows] == [f"r{n}" for n in range(11, 5, -1)]
    assert [e["rows"] for e in events_named(logs, "usage rows past retention deleted")] == [6]


async def test_an_age_of_zero_keeps_everything(store: Store) -> None:
    await store.insert([usage_row(ts=0.0)])
    await retention.keep(store, 0)  # returns at once: nothing to do
    assert (await query.summary(store, Filters(0, BASE_TS)))["requests"] == 1
