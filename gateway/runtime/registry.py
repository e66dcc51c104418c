"""The provider registry on a running gateway: read from the usage store in the background every
PROVIDERS_RELOAD_INTERVAL and joined to the file's table in one swap (GatewayState.register), so every replica
serves every registration; a change made through this replica is applied here at once. Requests only read the
table swapped in: nothing on their path waits on the store, and a store that fails keeps the last registry read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.runtime.state import STATE, GatewayState
from gateway.tasks import running
from gateway.usage import registry as stored
from gateway.usage.service import USAGE, Usage

log = structlog.get_logger("gateway.registry")

READ_TIMEOUT = 10.0
RETRY_FIRST_READ = 1.0


@dataclass(slots=True)
class Registry:
    state: GatewayState
    usage: Usage
    # One read-and-install at a time: an older read never replaces a newer one.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loaded: bool = False  # read from the store at least once
    failures: int = 0  # reads that failed (the last registry read stays in force)
    reported: Mapping[str, str] = field(default_factory=dict)

    async def refresh(self) -> bool:
        """Read the registrations and install them when they changed; True when they did. Store errors raise."""
        async with self.lock:
            async with asyncio.timeout(READ_TIMEOUT):
                rows = await stored.registrations(self.usage.store)
            self.loaded = True
            if rows == self.state.registered:
                return False
            self.state.register(rows)
            log.info(
                "provider registry applied",
                registered=sorted(r.name for r in rows),
                served=sorted(r.name for r in rows if r.name in self.state.table.providers),
            )
            self.report()
            return True

    def report(self) -> None:
        """Log each registration left out of the table, once per reason (after a registry read or a file reload)."""
        problems = self.state.registry_problems
        for name, problem in problems.items():
            if self.reported.get(name) != problem:
                log.error("registered provider left out of the table", provider=name, reason=problem)
        self.reported = dict(problems)

    async def poll(self, interval: float) -> None:
        """Once the store is open: read at once, then every `interval` seconds (0: only at start); forever."""
        await self.usage.opened.wait()
        failing = False
        while True:
            try:
                await self.refresh()
                if failing:
                    log.info("provider registry readable again")
                failing = False
            except Exception as exc:
                self.failures += 1
                if not failing:
                    log.warning("provider registry unreadable; keeping the last one read", error=type(exc).__name__)
                failing = True
            if interval <= 0 and self.loaded:
                return
            # With polling off, a first read that failed is tried again until one succeeds.
            await asyncio.sleep(interval if interval > 0 else RETRY_FIRST_READ)


REGISTRY = web.AppKey("registry", Registry)


class RegistryCollector:
    """The registry's reads and rows as Prometheus series (on the app's own registry, when metrics are on)."""

    def __init__(self, registry: Registry, namespace: str = "llmgw") -> None:
        self.registry = registry
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        ns, state = self.namespace, self.registry.state
        failures = CounterMetricFamily(
            f"{ns}_registry_read_failures",
            "Reads of the provider registry from the usage store that failed (the last registry read stays).",
        )
        failures.add_metric([], self.registry.failures)
        rows = GaugeMetricFamily(
            f"{ns}_registry_providers",
            "Registered providers this replica read: `joined` to the table, or `left_out` (a row it cannot take).",
            labels=["state"],
        )
        left_out = len(state.registry_problems)
        rows.add_metric(["joined"], len(state.registered) - left_out)
        rows.add_metric(["left_out"], left_out)
        yield from (failures, rows)


def setup(app: web.Application, register: Callable[[RegistryCollector], None] | None = None) -> None:
    """With the usage store on: the app's registry and its poller (cleanup_ctx), and its series when `register`
    (the metrics registry's) is given. Call after STATE is set."""
    usage = app.get(USAGE)
    if usage is None:
        return
    registry = app[REGISTRY] = Registry(app[STATE], usage)
    if register is not None:
        register(RegistryCollector(registry))
    # A file reload merges the registry again: a registration it leaves out is logged too.
    registry.state.reload_listeners.append(lambda _outcome: registry.report())
    app.cleanup_ctx.append(_lifecycle(registry))


def _lifecycle(registry: Registry) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        interval = registry.state.settings.reload_interval
        async with running(registry.poll(interval), name="provider-registry"):
            yield

    return context
