"""Real MCP servers for the tests: the official SDK's server side (MCPServer, served by uvicorn as the SDK runs it)
on a loopback port, over Streamable HTTP (at /mcp) or the older SSE transport (at /sse). Each runs on an event loop
of its own in a thread, so a test can stop a server (it dies: its port closes) and start it again on the same port
(it returns) without paying the SDK's import again for each.

Its tools:

- add(a, b): a + b, as text
- echo(text): the text back
- slow(seconds): sleeps, then "slept"
- fail(reason): raises, so the server answers with an error result
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.net import free_port

TOOLS = ("add", "echo", "fail", "slow")


def build(name: str) -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name, log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @server.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        return text

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep for a while, then answer."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    return server


@dataclass
class McpTestServer:
    """One server; `stop()` ends it (the server dies, its port closes), `start()` brings it back on the same port.
    Both block until done (bounded): call them through asyncio.to_thread from a test's loop."""

    transport: str = "streamable_http"
    name: str = "files"
    port: int = field(default_factory=free_port)
    _uvicorn: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    def start(self) -> None:
        import uvicorn

        mcp = build(self.name)
        app = mcp.sse_app() if self.transport == "sse" else mcp.streamable_http_app()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._uvicorn = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        self._thread.start()
        for _ in range(2000):
            if server.started:
                return
            if not self._thread.is_alive():
                raise AssertionError(f"the MCP server on {self.port} did not start")
            self._thread.join(0.01)
        raise AssertionError(f"the MCP server on {self.port} did not start within 20s")

    def stop(self) -> None:
        if self._uvicorn is None or self._thread is None:
            return
        # Closed as a server that dies: its port at once; streams still open (SSE) are cut after a moment.
        self._uvicorn.should_exit = True
        self._thread.join(2)
        if self._thread.is_alive():
            self._uvicorn.force_exit = True
            self._thread.join(10)
        self._uvicorn = self._thread = None


@contextlib.contextmanager
def mcp_server(transport: str = "streamable_http", name: str = "files") -> Iterator[McpTestServer]:
    server = McpTestServer(transport, name)
    server.start()
    try:
        yield server
    finally:
        server.stop()
