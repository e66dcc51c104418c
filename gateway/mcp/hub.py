"""The app's MCP state: one link per server in MCP_SERVERS, each in a background task of the app's cleanup context,
and the catalog of the tools of the servers that are up, rebuilt (and swapped whole) when a server comes, goes or
changes its list. Start-up never waits on a server; a request reads `hub.catalog` once and never waits either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.config.settings import Settings
from gateway.mcp.catalog import EMPTY, Catalog, Tool

if TYPE_CHECKING:
    from gateway.mcp.link import ToolResult

log = structlog.get_logger("gateway.mcp")


class Hub:
    def __init__(self, settings: Settings) -> None:
        # The SDK is imported here, not with the module: a gateway without MCP never loads it (start-up time).
        from gateway.mcp.link import Link

        self.settings = settings
        self.links = {server.name: Link(server, settings, self._rebuild) for server in settings.mcp_servers}
        self.catalog: Catalog = EMPTY

    def _rebuild(self) -> None:
        self.catalog = Catalog.of(tool for link in self.links.values() for tool in link.tools)

    async def call(self, tool: Tool, arguments: dict[str, object], timeout: float) -> ToolResult:
        return await self.links[tool.server].call(tool.tool, dict(arguments), timeout)


MCP = web.AppKey("mcp", Hub)


def setup(app: web.Application, settings: Settings, register: Callable[[Collector], None] | None) -> None:
    """With MCP_ENABLE: the hub under `MCP`, its links started with the app (not awaited) and stopped with it;
    `register` receives the collector of the servers' state for the metrics registry."""
    if not settings.mcp_enable:
        return
    hub = Hub(settings)
    app[MCP] = hub
    if register is not None:
        register(HubCollector(hub))
    app.cleanup_ctx.append(_lifecycle)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[MCP]
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(link.run(), name=f"mcp:{name}") for name, link in hub.links.items()]
    log.info("mcp on", servers=len(tasks), expose=hub.settings.mcp_expose)
    try:
        yield
    finally:
        for link in hub.links.values():
            link.closing = True
        for task in tasks:
            task.cancel()
        if tasks:
            # A server that does not let go of its connection does not hold up the shutdown: `asyncio.wait` bounds
            # the wait even for a task that swallowed its cancellation, which awaiting it under a timeout does not
            # (the timeout's cancel would be passed on to that task, and swallowed again).
            done, _ = await asyncio.wait(tasks, timeout=2)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: the link's end is logged by the link, not as "never retrieved"


class HubCollector(Collector):
    """The servers' state, read at scrape time: up (1) or not, tools offered, failed sessions."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "llmgw_mcp_server_up", "1 while the MCP server is connected and listed.", labels=["server"]
        )
        tools = GaugeMetricFamily("llmgw_mcp_tools", "Tools the MCP server offers now.", labels=["server"])
        failures = CounterMetricFamily(
            "llmgw_mcp_connection_failures", "MCP sessions that failed to open or broke.", labels=["server"]
        )
        for name, link in self._hub.links.items():
            up.add_metric([name], 1 if link.state == "up" else 0)
            tools.add_metric([name], len(link.tools))
            failures.add_metric([name], link.connect_failures)
        yield up
        yield tools
        yield failures

    def describe(self) -> Iterator[Metric]:
        return iter(())
