"""One MCP server: its connection through the official SDK (Streamable HTTP first, the older SSE transport when
that fails), its tools, kept fresh by polling, and reconnection with backoff. A link runs in one background task
that the hub owns (the SDK's client must be entered and left in the same task); requests call its tools from
their own tasks, each call bounded, and a failed call becomes an error text, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson
import structlog
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation, TextContent

from gateway.config.settings import McpServer, Settings
from gateway.mcp.catalog import TOOL_NAME, Tool

log = structlog.get_logger("gateway.mcp")

State = Literal["connecting", "up", "down"]
TransportName = Literal["streamable_http", "sse"]
Outcome = Literal["ok", "error", "timeout", "unavailable"]

# What a tool's answer may add to a conversation; beyond it the text is cut (and says so).
RESULT_MAX = 256 * 1024
# Pages of tools/list read at most: a server that paginates forever cannot hold a link.
_MAX_PAGES = 100
_CLIENT_INFO = Implementation(name="llm-gateway", version="0.1.0")


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call gave: the text the model sees (the answer, or why there is none) and how it went."""

    text: str
    outcome: Outcome


def shown_url(url: str) -> str:
    """A server URL as logs and clients see it: no user, password, query or fragment (where tokens travel)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Link:
    """The gateway's side of one server. `tools` is empty unless the server is up."""

    def __init__(self, server: McpServer, settings: Settings, changed: Callable[[], None]) -> None:
        self.server = server
        self.url = shown_url(server.url)
        self.state: State = "connecting"
        self.transport: TransportName | None = None
        self.tools: tuple[Tool, ...] = ()
        self.connect_failures = 0  # sessions that failed or broke, for the metrics
        self._settings = settings
        self._changed = changed
        self._client: Client | None = None
        self._prefer: TransportName = "streamable_http"
        # Set by a call that failed on the connection: the next poll comes at once, not after the interval.
        self._suspect = asyncio.Event()
        # Set by the app's shutdown before it cancels `run`: the SDK's task groups can swallow that cancellation
        # (anyio uncancels the task), which must then end the link rather than count as a broken connection.
        self.closing = False

    # --- the background task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, list, poll, until cancelled. A failure takes the tools away and the link tries again: up to
        MCP_MAX_RETRIES times with exponential backoff (from MCP_INITIAL_BACKOFF, at most MCP_RETRY_INTERVAL),
        then every MCP_RECONNECT_INTERVAL, or never again without MCP_ENABLE_RECONNECT."""
        settings = self._settings
        failed = 0
        while True:
            was_up = False
            try:
                was_up = await self._session()
                reason = "the session ended"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.closing or (task is not None and task.cancelling()):
                    raise
                # The SDK's task group cancelled its host when the connection broke: a failure like any other.
                reason = "the connection was cancelled"
            except Exception as exc:
                reason = describe(exc)
            failed = 1 if was_up else failed + 1
            self.connect_failures += 1
            if failed <= settings.mcp_max_retries:
                wait: float | None = min(settings.mcp_initial_backoff * 2 ** (failed - 1), settings.mcp_retry_interval)
            elif settings.mcp_enable_reconnect:
                wait = settings.mcp_reconnect_interval
            else:
                wait = None
            if self.closing:
                return
            self._down(reason, wait)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _session(self) -> bool:
        """One connection, on the transport that worked last (Streamable HTTP at first), the other when it fails
        before the server was up. Returns (or raises) when the connection is over; True if it was up."""
        first = self._prefer
        second: TransportName = "sse" if first == "streamable_http" else "streamable_http"
        try:
            return await self._serve(first)
        except Exception:
            if self.state == "up":
                raise
            with contextlib.suppress(Exception):
                return await self._serve(second)
            raise  # the first transport's failure is the one reported

    async def _serve(self, transport: TransportName) -> bool:
        settings = self._settings
        timeout = httpx2.Timeout(
            settings.mcp_client_timeout,
            connect=settings.mcp_dial_timeout + settings.mcp_tls_handshake_timeout,
        )
        async with contextlib.AsyncExitStack() as stack:
            if transport == "streamable_http":
                http = await stack.enter_async_context(httpx2.AsyncClient(timeout=timeout))
                link: Any = streamable_http_client(self.server.url, http_client=http)
                mode = "auto"
            else:
                # The SSE transport's event stream stays open between answers: the SDK's read limit (300 s) for it.
                link = sse_client(self.server.url, timeout=settings.mcp_client_timeout)
                mode = "legacy"
            client = Client(
                link, mode=mode, client_info=_CLIENT_INFO, read_timeout_seconds=settings.mcp_request_timeout
            )
            async with asyncio.timeout(settings.mcp_request_timeout + timeout.connect):  # type: ignore[operator]
                await stack.enter_async_context(client)
                await self._refresh(client)
            self._client, self.transport, self._prefer = client, transport, transport
            self._up()
            try:
                await self._poll(client)
            finally:
                self._client = None
        return True

    async def _poll(self, client: Client) -> None:
        """List the tools again every MCP_POLLING_INTERVAL (the health check), at once after a failed call."""
        settings = self._settings
        while True:
            self._suspect.clear()
            if settings.mcp_polling_enable:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.mcp_polling_interval):
                        await self._suspect.wait()
            else:
                await self._suspect.wait()
            async with asyncio.timeout(settings.mcp_polling_timeout):
                await self._refresh(client)
            if not settings.mcp_disable_healthcheck_logs:
                log.info("mcp server polled", server=self.server.name, tools=len(self.tools))

    async def _refresh(self, client: Client) -> None:
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            for listed in page.tools:
                tool = Tool.of(self.server.name, self.url, listed.name, listed.description, listed.input_schema)
                if TOOL_NAME.match(tool.name):
                    tools.append(tool)
                elif self.state != "up":
                    log.warning("mcp tool not offered: its name does not fit", server=self.server.name, tool=tool.name)
            cursor = page.next_cursor
            if cursor is None:
                break
        found = tuple(sorted(tools, key=lambda t: t.name))
        if found != self.tools and self.state == "up":
            log.info("mcp server's tools changed", server=self.server.name, tools=len(found))
            self.tools = found
            self._changed()
        else:
            self.tools = found

    def _up(self) -> None:
        self.state = "up"
        log.info(
            "mcp server up", server=self.server.name, url=self.url, transport=self.transport, tools=len(self.tools)
        )
        self._changed()

    def _down(self, reason: str, retry_in: float | None) -> None:
        was = self.state
        self.state, self.tools, self.transport = "down", (), None
        if retry_in is None:
            log.error(
                "mcp server down; not reconnecting (MCP_ENABLE_RECONNECT=false)",
                server=self.server.name,
                url=self.url,
                reason=reason,
            )
        elif was != "down":
            log.warning(
                "mcp server down: its tools are absent until it returns",
                server=self.server.name,
                url=self.url,
                reason=reason,
                retry_in=retry_in,
            )
        if was == "up":
            self._changed()

    # --- calls from requests -------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        """Run one tool within `timeout` seconds. Whatever goes wrong comes back as a text the model can read."""
        client = self._client
        if client is None:
            return ToolResult(f"error: the tool server {self.server.name!r} is unavailable", "unavailable")
        try:
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except TimeoutError:
            return ToolResult(f"error: the tool did not answer within {timeout:g}s", "timeout")
        except MCPError as exc:
            if exc.code == -32000:  # the SDK's "Connection closed": look at the server now, not at the next poll
                self._suspect.set()
            return ToolResult(f"error: the tool failed: {exc.message}", "error")
        except Exception as exc:
            self._suspect.set()
            return ToolResult(f"error: the tool server failed: {describe(exc)}", "error")
        text = _result_text(result.content, result.structured_content)
        return ToolResult(text, "error" if result.is_error else "ok")


def _result_text(content: list[Any], structured: Any) -> str:
    parts = []
    for block in content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            mime = getattr(block, "mime_type", None)
            parts.append(f"[{block.type}{': ' + mime if mime else ''}]")
    if not parts and structured is not None:
        parts.append(orjson.dumps(structured).decode())
    text = "\n".join(parts)
    if len(text) > RESULT_MAX:
        text = text[:RESULT_MAX] + f"\n[cut: the tool's answer exceeded {RESULT_MAX} characters]"
    return text


def describe(exc: BaseException) -> str:
    """A one-line reason for a failure, looking inside the SDK's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = str(exc).strip()
    if isinstance(exc, MCPError):
        message = exc.message
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__
