"""Shutdown ends every MCP link, even one whose cancellation the SDK swallowed (anyio's cancel scopes can uncancel
the task that hosts them), and never waits on a link that will not end for more than its bound."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from gateway.config.settings import McpServer
from gateway.mcp.hub import MCP
from gateway.mcp.link import Link
from tests.fakes.gateways import TINY, gateway_app
from tests.fakes.net import free_port
from tests.fakes.tables import entry, table_of
from tests.mcp.conftest import mcp_settings

BOUND = 30.0  # seconds: a hang guard, far above the shutdown's own 2 s bound


async def _swallowing_session() -> bool:
    """A session whose cancellation is swallowed as the SDK's task group can: the task is uncancelled and the
    CancelledError raised anyway, so `cancelling()` reads 0."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        raise
    return False


async def test_a_closing_link_ends_when_its_cancellation_was_swallowed() -> None:
    server = McpServer("gone", f"http://127.0.0.1:{free_port()}/mcp")
    link = Link(server, mcp_settings(base=TINY), lambda: None)
    link._session = _swallowing_session  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(link.run())
    await asyncio.sleep(0.05)
    link.closing = True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert task in done and task.cancelled()
    assert link.connect_failures == 0  # not counted as a broken connection


async def test_shutdown_does_not_wait_on_a_link_that_never_ends(aiohttp_client: Any) -> None:
    settings = replace(
        mcp_settings(base=TINY), mcp_servers=(McpServer("stuck", f"http://127.0.0.1:{free_port()}/mcp"),)
    )
    released = asyncio.Event()

    async def never_ends() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()  # swallowed, every time

    app = gateway_app(settings, table_of(entry("local", "http://127.0.0.1:9/v1")))
    app[MCP].links["stuck"].run = never_ends  # type: ignore[method-assign]
    client = await aiohttp_client(app)
    closing = asyncio.get_running_loop().create_task(client.close())
    try:
        done, _ = await asyncio.wait({closing}, timeout=BOUND)
        assert closing in done
    finally:
        released.set()
