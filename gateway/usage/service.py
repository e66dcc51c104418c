"""The usage store as the app holds it: the store, its writer (whose sink create_app puts in the sink list) and
the background work, owned by the app's cleanup_ctx. The store is opened (and migrated) in the background, retried
until it answers: a database down at start-up delays usage rows, never the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.exchange import Sink
from gateway.tasks import running
from gateway.usage import retention
from gateway.usage.metrics import UsageCollector
from gateway.usage.record import Bodies, Scrub
from gateway.usage.store import Store, open_store
from gateway.usage.writer import Writer

log = structlog.get_logger("gateway.usage")

OPEN_RETRY_MAX = 10.0
# What is queued at shutdown is written within this, or SERVER_DRAIN_TIMEOUT when shorter.
FLUSH_BUDGET = 5.0


@dataclass(slots=True)
class Usage:
    store: Store
    writer: Writer
    api_enable: bool  # the usage API with client auth off
    ready: bool = False  # open and migrated: queries may run
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # set with `ready`


USAGE = web.AppKey("usage", Usage)


def setup(
    app: web.Application,
    settings: Settings,
    table: Callable[[], ProviderTable],
    scrub: Scrub,
    bodies: Bodies | None,
    operations: frozenset[str],
    register: Callable[[UsageCollector], None] | None = None,
) -> Sink | None:
    """With USAGE_STORE set: the app's usage state and lifecycle; returns the sink for create_app's list.
    `operations`: those that get a row (the route table's inference operations: probes and the usage API's own
    reads would only bury the traffic)."""
    if settings.usage_store is None:
        return None
    store = open_store(settings.usage_store)
    writer = Writer(
        store,
        table,
        scrub,
        capacity=settings.usage_queue_size,
        batch=settings.usage_batch_size,
        interval=settings.usage_flush_interval,
        bodies=bodies if settings.usage_store_bodies else None,
        operations=operations,
    )
    usage = app[USAGE] = Usage(store, writer, settings.usage_api_enable or settings.auth_enable)
    if register is not None:
        register(UsageCollector(writer.counters, lambda: writer.depth))
    app.cleanup_ctx.append(_lifecycle(usage, settings))
    return writer.sink


def _lifecycle(usage: Usage, settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        try:
            async with running(_work(usage, settings.usage_retention)):
                yield
        finally:
            await usage.writer.drain(min(FLUSH_BUDGET, settings.drain_timeout))
            await usage.store.close()

    return context


async def _work(usage: Usage, keep_for: float) -> None:
    store = usage.store
    pause, failing = 0.5, False
    while True:
        try:
            await store.open()
            break
        except Exception as exc:
            if not failing:
                failing = True
                log.warning("usage store unavailable; retrying", store=store.where, error=type(exc).__name__)
            await asyncio.sleep(pause)
            pause = min(pause * 2, OPEN_RETRY_MAX)
    usage.ready = True
    usage.opened.set()
    log.info("usage store ready", store=store.where, kind=store.dialect)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(usage.writer.run())
        tasks.create_task(retention.keep(store, keep_for))
