"""A background task for the life of a context: started on entry, cancelled and awaited on exit (the app's
cleanup contexts hold their pollers and writers this way)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, object], name: str | None = None) -> AsyncIterator[asyncio.Task[object]]:
    """`work` as a task until the block ends, then cancelled and awaited (its cancellation is the expected end)."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
