"""Retention: rows older than USAGE_RETENTION are deleted in the background, in small batches, once at start-up
and then every `every` seconds. A failure is logged and tried again next time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.usage.store import Store

log = structlog.get_logger("gateway.usage")

EVERY = 3600.0


async def keep(store: Store, age: float, every: float = EVERY, clock: Callable[[], float] = time.time) -> None:
    """Until cancelled; `age` 0 keeps everything (nothing to do)."""
    if age <= 0:
        return
    while True:
        try:
            deleted = await store.delete_before(clock() - age)
            if deleted:
                log.info("usage rows past retention deleted", rows=deleted, retention_s=age)
        except Exception as exc:
            log.warning("usage retention failed; tried again later", error=type(exc).__name__)
        await asyncio.sleep(min(every, age))
