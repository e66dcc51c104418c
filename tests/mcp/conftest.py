"""Fixtures of the MCP tests: a real MCP server (the SDK's own, Streamable HTTP on a loopback port) shared by a
module's tests, and MCP settings with short intervals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from gateway.config.settings import McpServer, Settings
from tests.fakes.gateways import TINY
from tests.fakes.mcp_servers import McpTestServer, mcp_server


@pytest.fixture(scope="module")
def files_server() -> Iterator[McpTestServer]:
    with mcp_server() as server:
        yield server


@pytest.fixture
async def own_server() -> AsyncIterator[McpTestServer]:
    """A server of the test's own, to kill and bring back."""
    server = McpTestServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        server.stop()


def mcp_settings(*servers: McpTestServer, base: Settings = TINY, **changes: Any) -> Settings:
    """MCP on for `servers` (each named after its own name), listed at /v1/mcp/tools, with short waits."""
    values: dict[str, Any] = {
        "mcp_enable": True,
        "mcp_expose": True,
        "mcp_servers": tuple(McpServer(s.name, s.url) for s in servers),
        "mcp_initial_backoff": 0.05,
        "mcp_retry_interval": 0.2,
        "mcp_reconnect_interval": 0.2,
        "mcp_polling_interval": 0.2,
        "mcp_request_timeout": 2.0,
    }
    values.update(changes)
    return replace(base, **values)
