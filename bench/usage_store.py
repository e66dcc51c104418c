"""The usage store's figures: what its sink costs on the request path, and the sustained rate at which its writer
stores rows (SQLite by default; any USAGE_STORE value with --store).

    PYTHONPATH=. .venv/bin/python -m bench.usage_store [--rows 100000] [--store postgresql://...]

The sink is timed alone (a capture put on the queue), like bench/observability_overhead.py times the other sinks.
The write rate runs the real path end to end: captures made by the sink as fast as one event loop can make them,
rows made by the writer (cost from the table's prices, metadata as JSON) and inserted in batches of
USAGE_BATCH_SIZE (500) in one transaction each, until every row is in the store; rows per second of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import timeit
from pathlib import Path

from gateway.config.providers import Price, Provider, ProviderTable, index_table
from gateway.exchange import Exchange, Usage
from gateway.telemetry.scanners import SseUsage
from gateway.usage.store import open_store
from gateway.usage.writer import Writer


def exchange() -> Exchange:
    """A finished streamed chat with usage, a client, metadata and a user: the fullest row."""
    record = Exchange(operation="chat", route="/v1/chat/completions", provider="p", model="m", stream=True)
    record.request_id, record.client_name, record.requested_model = "0" * 32, "team-a", "m"
    scanner = SseUsage()
    scanner.feed(b'data: {"usage":{"prompt_tokens":120,"completion_tokens":40}}\n')
    scanner.first_content_at = record.started + 0.05
    assert scanner.usage == Usage(120, 40)
    record.scanner = scanner
    record.request_body = {"model": "m", "messages": [], "metadata": {"source": "bench", "run": 7}, "user": "u-1"}
    return record


def table() -> ProviderTable:
    provider = Provider("p", "http://127.0.0.1:1", "none", False, {}, prices={"m": Price(1.0, 2.0)})
    return index_table({"p": provider})


def sink_cost() -> float:
    """Microseconds per sink call, best of 7 runs of 20,000 (the queue emptied between runs)."""
    writer = Writer(open_store(":memory:"), table, lambda v: v, capacity=10**6, batch=10**6, interval=1.0)
    record, ended = exchange(), time.perf_counter()
    best = float("inf")
    for _ in range(7):
        writer.queue.clear()
        seconds = timeit.timeit(lambda: writer.sink(None, record, 200, ended), number=20_000)  # type: ignore[arg-type]
        best = min(best, seconds / 20_000)
    return best * 1e6


async def write_rate(url: str, rows: int, batch: int) -> tuple[float, int]:
    """Rows per second stored, end to end, and the rows dropped (0 unless the queue overflowed)."""
    store = open_store(url)
    await store.open()
    writer = Writer(store, table, lambda v: v, capacity=rows, batch=batch, interval=0.05)
    record, ended = exchange(), time.perf_counter()
    task = asyncio.get_running_loop().create_task(writer.run())
    started = time.perf_counter()
    made = 0
    while made < rows:
        for _ in range(min(1000, rows - made)):
            writer.sink(None, record, 200, ended)  # type: ignore[arg-type]
        made += min(1000, rows - made)
        await asyncio.sleep(0)
    for _ in range(600_000):  # at most ten minutes
        if writer.counters.written + writer.counters.dropped >= rows:
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    found = await store.fetch("SELECT count(*) FROM usage_requests", [])
    assert found[0][0] == writer.counters.written, (found, writer.counters)
    await store.close()
    return writer.counters.written / elapsed, writer.counters.dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--store", help="a USAGE_STORE value (default: a SQLite file in a temporary folder)")
    args = parser.parse_args()
    print(f"usage sink: {sink_cost():.2f} us per request (capture queued; best of 7 x 20,000)")
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as folder:
        url = args.store or str(Path(folder) / "usage.db")
        rate, dropped = asyncio.run(write_rate(url, args.rows, args.batch))
    kind = "PostgreSQL" if url.startswith("postgres") else "SQLite (WAL, synchronous=NORMAL)"
    print(f"write rate: {rate:,.0f} rows/s sustained, {args.rows:,} rows in batches of {args.batch}, {kind}")
    print(f"dropped: {dropped}")


if __name__ == "__main__":
    main()
