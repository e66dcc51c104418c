"""Hot reload of the provider table: on SIGHUP, or when the file changes on disk, a new table is read and validated
off the event loop, then swapped in whole; a bad one is logged and the running table kept.

Changes are found by polling the file's stat (resolved path, device, inode, size, mtime) every
PROVIDERS_RELOAD_INTERVAL, which also sees Kubernetes' ConfigMap update: the `..data` symlink is swapped atomically,
so the resolved path and inode change while the mounted name stays the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping

import structlog
from aiohttp import web

from gateway.config.filestamp import stamp
from gateway.config.providers import ProviderTable, load_table
from gateway.errors import ConfigError
from gateway.runtime.state import STATE, GatewayState
from gateway.tasks import running

log = structlog.get_logger("gateway.reload")

EnvSource = Callable[[], Mapping[str, str]]


class Reloader:
    """Reloads one state's table from its file; one reload at a time, run by `watch`."""

    def __init__(self, state: GatewayState, path: str, env: EnvSource) -> None:
        self.state = state
        self.path = path
        self.env = env
        self.seen = stamp(path)
        self.wanted = asyncio.Event()

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler); the watcher runs it at once."""
        self.wanted.set()

    async def watch(self, interval: float) -> None:
        """Reload when asked, or when the file's stamp differs from the last one read; forever."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval or None):
                    await self.wanted.wait()
            asked = self.wanted.is_set()
            self.wanted.clear()
            try:
                if asked:
                    await self.reload("signal")
                elif stamp(self.path) not in (self.seen, None):
                    await self.reload("file changed")
            except Exception:
                # Whatever went wrong, the running table stays and the watcher keeps watching.
                self.state.record_load("failure")
                log.exception("provider table reload failed; keeping the running one", source=self.path)

    async def reload(self, reason: str) -> bool:
        """Read and validate the file, then swap it in; on any problem keep the running table."""
        current = stamp(self.path)
        try:
            table = await asyncio.to_thread(load_table, self.path, dict(self.env()))
        except ConfigError as exc:
            # The stamp is remembered so a broken file is reported once, not at every poll.
            self.seen = current
            self.state.record_load("failure")
            log.error(
                "provider table rejected; keeping the running one",
                source=exc.source,
                reason=reason,
                problems=exc.problems,
                providers=len(self.state.table.providers),
            )
            return False
        self.seen = current
        old = self.state.file_table
        self.state.swap(table)
        self.state.record_load("success")
        log.info("provider table reloaded", source=self.path, reason=reason, **_changes(old, table))
        return True


def _changes(old: ProviderTable, new: ProviderTable) -> dict[str, object]:
    before, after = set(old.providers), set(new.providers)
    changed = sorted(pid for pid in before & after if old.providers[pid] != new.providers[pid])
    served = sorted(p.id for p in new.served)
    return {"added": sorted(after - before), "removed": sorted(before - after), "changed": changed, "served": served}


def reload_context(env: EnvSource = lambda: os.environ) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: watch the table's file and listen for SIGHUP while the app runs.

    Active only when the running table was read from a file (`table.source` names one): a table built in code
    has nothing to reload from.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]
        source = state.table.source
        if stamp(source) is None:
            yield
            return
        reloader = Reloader(state, source, env)
        loop = asyncio.get_running_loop()
        async with running(reloader.watch(state.settings.reload_interval), name="provider-table-watcher"):
            hooked = _on_sighup(loop, reloader.request)
            log.info(
                "watching the provider table", source=source, interval=state.settings.reload_interval, sighup=hooked
            )
            try:
                yield
            finally:
                if hooked:
                    loop.remove_signal_handler(signal.SIGHUP)

    return context


def _on_sighup(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    try:
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        # No signals here (Windows, or not the main thread): file polling still works.
        return False
    return True
