"""The bounded queue between the request path and the store, and the writer that empties it in batches.

The sink only appends a capture to a deque (never awaits); beyond `capacity` rows it drops the capture and counts
it, with one warning line per incident. The writer takes up to `batch` captures, makes their rows (cost, metadata)
and writes them in one transaction; while the store fails, the batch waits and is retried with a growing pause, so
a store that comes back gets every row that was not dropped. Shutdown writes what is queued within a time budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway.config.providers import ProviderTable
from gateway.exchange import Exchange
from gateway.usage.record import Bodies, Capture, Scrub, capture, row, tool_rows
from gateway.usage.store import Row, Store

log = structlog.get_logger("gateway.usage")

RETRY_FIRST = 0.25
RETRY_MAX = 5.0


@dataclass(slots=True)
class Counters:
    """What /metrics shows of the writer (usage/metrics.py)."""

    written: int = 0
    dropped: int = 0  # captures refused by a full queue
    failed: int = 0  # rows of a batch the store refused as bad (never retried)
    write_errors: int = 0  # failed attempts to write a batch (retried)
    store_up: bool = False


class Writer:
    def __init__(
        self,
        store: Store,
        table: Callable[[], ProviderTable],
        scrub: Scrub,
        *,
        operations: frozenset[str] | None = None,
        capacity: int,
        batch: int,
        interval: float,
        bodies: Bodies | None = None,
    ) -> None:
        self.store = store
        self.table = table
        self.scrub = scrub
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.bodies = bodies
        # The operations that get a row (those that call a provider); None: every request.
        self.operations = operations
        self.queue: deque[Capture] = deque()
        self.counters = Counters()
        self._wake = asyncio.Event()
        self._pending: list[Row] = []  # the batch being written: taken off the queue, not yet in the store
        self._pending_tools: list[Row] = []  # its requests' tool calls
        self._dropping = 0  # captures dropped in the current incident (0: none)
        self._failing = False

    @property
    def depth(self) -> int:
        return len(self.queue) + len(self._pending)

    def sink(self, request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        """The sink (exchange.Sink): a capture on the queue, or a counted drop. Never awaits."""
        operations = self.operations
        if operations is not None and exchange.operation not in operations:
            return
        queue = self.queue
        if len(queue) >= self.capacity:
            self.counters.dropped += 1
            if not self._dropping:
                log.warning(
                    "usage queue full: rows are dropped until the store catches up",
                    capacity=self.capacity,
                    store=self.store.where,
                )
            self._dropping += 1
            return
        queue.append(capture(exchange, status, ended, self.bodies))
        if len(queue) == self.batch:
            self._wake.set()

    async def run(self) -> None:
        """Until cancelled: a batch whenever one is full or `interval` has passed; failures wait and retry."""
        pause = RETRY_FIRST
        while True:
            if not self._pending and len(self.queue) < self.batch:
                try:
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
            if await self.flush_batch():
                pause = RETRY_FIRST
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)

    async def flush_batch(self) -> bool:
        """Write one batch (the pending one first); False when the store failed and it is to be retried."""
        if not self._pending:
            queue = self.queue
            count = min(len(queue), self.batch)
            if not count:
                return True
            table, scrub = self.table(), self.scrub
            captures = [queue.popleft() for _ in range(count)]
            self._pending = [row(c, table, scrub) for c in captures]
            # A request's MCP tool calls go in the same transaction as its row.
            self._pending_tools = [one for c in captures if c.tool_runs for one in tool_rows(c)]
        rows, tools = self._pending, self._pending_tools
        try:
            await self.store.insert(rows, tools)
        except Exception as exc:
            self.counters.write_errors += 1
            self.counters.store_up = False
            if not self.store.transient(exc):
                self.counters.failed += len(rows)
                self._pending, self._pending_tools = [], []
                log.error("usage rows refused by the store: dropped", rows=len(rows), error=_describe(exc))
                return True
            if not self._failing:
                self._failing = True
                log.warning(
                    "usage store write failed: rows wait in the queue and are retried",
                    store=self.store.where,
                    error=_describe(exc),
                )
            return False
        self._pending, self._pending_tools = [], []
        self.counters.written += len(rows)
        self.counters.store_up = True
        if self._failing:
            self._failing = False
            log.info("usage store writing again", store=self.store.where, queued=self.depth)
        if self._dropping and len(self.queue) < self.capacity // 2:
            log.warning("usage rows were dropped while the queue was full", dropped=self._dropping)
            self._dropping = 0
        return True

    async def drain(self, budget: float) -> int:
        """At shutdown: write what is queued within `budget` seconds; the rows left unwritten (counted dropped)."""
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget):
                while self.depth:
                    if not await self.flush_batch():
                        await asyncio.sleep(min(RETRY_FIRST, max(deadline - time.monotonic(), 0)))
        except TimeoutError:
            pass
        left = self.depth
        if left:
            self.counters.dropped += left
            log.warning("usage rows not written before shutdown", rows=left, store=self.store.where)
        return left


def _describe(exc: BaseException) -> str:
    """The error's kind and message, one line (a store's errors do not carry the URL's password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
