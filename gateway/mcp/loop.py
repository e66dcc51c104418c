"""The chat loop: a chat request gets the MCP tools its client may have, added to its own `tools`; when the model
calls them, the gateway runs them and asks the model again with their results, until it answers or calls one of
the client's own tools (which goes back to the client untouched), within MCP_MAX_ITERATIONS model turns and the
MCP_LOOP_TIMEOUT budget. The chat handler calls `offer` (cheap, no I/O) and, when it gives tools, `run`.

Streams: one stream to the client. Text reaches it as each turn produces it; the gateway's own tool calls do not
(a tool call the client did not make would break its own loop): while they run it reads SSE comments,
`: mcp <tool> running`, which SDKs skip. Every turn after the first carries the first turn's chunk id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway.access import auth
from gateway.errors import UpstreamError, UpstreamReply
from gateway.exchange import Exchange, ToolRun
from gateway.mcp.catalog import Tool, client_tool_names, offered
from gateway.mcp.hub import Hub
from gateway.mcp.turns import Call, StreamTurn, Usage, answer_calls, assistant_message, client_answer, split_calls
from gateway.mcp.turns import usage_event as summed_usage_event
from gateway.upstream import call
from gateway.upstream.timeouts import Limits, RetryPolicy
from gateway.upstream.transport import TimedOut, Transport, TransportError, UpstreamRequest, gateway_error

log = structlog.get_logger("gateway.mcp")

# A client sends `X-Gateway-MCP: off` to have no MCP tools for one request.
OPT_OUT = "X-Gateway-MCP"
_OFF = frozenset({"off", "none", "false", "0", "no"})
# A whole (not streamed) answer of one turn is read up to this size; beyond it, the gateway's 502.
ANSWER_MAX = 16 * 1024 * 1024
# While tools run, a streaming client gets a comment this often (proxies and clients see the stream alive).
KEEPALIVE = 5.0


def offer(request: web.Request, hub: Hub, body: dict[str, Any]) -> dict[str, Tool] | None:
    """The MCP tools this chat request gets, or None for a plain relay: the client opted out, no server is up,
    its policy allows none, it asked for several choices (`n`) or no tools at all (`tool_choice: none`)."""
    catalog = hub.catalog
    if not catalog:
        return None
    opt = request.headers.get(OPT_OUT)
    if opt is not None and opt.strip().lower() in _OFF:
        return None
    if body.get("tool_choice") == "none" or body.get("n") not in (None, 1):
        return None
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return None  # the provider judges a malformed request as it is
    rules = auth.client_policy(request).mcp
    if not rules.enabled:
        return None
    return offered(catalog, rules, client_tool_names(tools)) or None


@dataclass(frozen=True, slots=True)
class Upstream:
    """The provider call the chat handler resolved, as the loop repeats it once per turn."""

    transport: Transport
    request: UpstreamRequest  # method, URL and headers; the body is the loop's
    model: str  # the model name the provider receives
    limits: Limits
    retry: RetryPolicy
    ask_usage: bool  # the gateway asks for stream usage the client did not (the provider's table entry says so)
    write_timeout: float | None


async def run(
    request: web.Request,
    exchange: Exchange,
    hub: Hub,
    tools: dict[str, Tool],
    body: dict[str, Any],
    upstream: Upstream,
    stream: bool,
) -> web.StreamResponse:
    loop = Loop(request, exchange, hub, tools, body, upstream)
    return await (loop.streamed() if stream else loop.whole())


class Loop:
    def __init__(
        self,
        request: web.Request,
        exchange: Exchange,
        hub: Hub,
        tools: dict[str, Tool],
        body: dict[str, Any],
        upstream: Upstream,
    ) -> None:
        settings = hub.settings
        self.request, self.exchange, self.hub, self.tools, self.upstream = request, exchange, hub, tools, upstream
        self.body = body
        self.names = frozenset(tools)
        self.messages: list[Any] = list(body["messages"])
        self.usage = Usage()
        self.turns = settings.mcp_max_iterations
        self.deadline = asyncio.get_running_loop().time() + settings.mcp_loop_timeout
        self.tool_timeout = settings.mcp_request_timeout
        client_tools = body.get("tools") or []
        self.with_mcp = [*client_tools, *(tool.definition for tool in tools.values())]
        self.without_mcp = client_tools
        exchange.tool_runs = []

    # --- the provider, once per turn ---------------------------------------------------------------------------

    def _last(self, turn: int) -> bool:
        """The last turn, by count or because the budget is spent: it is offered no MCP tools, and whatever it
        says goes to the client (a call of an MCP tool it was not offered is dropped, not run)."""
        return turn + 1 >= self.turns or asyncio.get_running_loop().time() >= self.deadline

    def _payload(self, last: bool, stream: bool) -> bytes:
        """The turn's request: the client's body with the conversation so far, its tools and (but on the last
        turn) the MCP tools."""
        payload = dict(self.body)
        payload["model"] = self.upstream.model
        payload.pop("provider", None)
        payload["messages"] = self.messages
        tools = self.without_mcp if last else self.with_mcp
        if tools:
            payload["tools"] = tools
        else:
            payload.pop("tools", None)
            payload.pop("tool_choice", None)
            payload.pop("parallel_tool_calls", None)
        if stream and self.upstream.ask_usage:
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)

    async def _open(self, last: bool, stream: bool) -> tuple[Any, float | None]:
        up = self.upstream
        started = up.transport.loop.time()
        request = up.request._replace(body=self._payload(last, stream))
        answer = await call.open_answer(up.transport, request, up.limits, self.exchange, up.retry, started)
        whole_end = None if up.limits.whole is None else started + up.limits.whole
        return answer, whole_end

    async def _read_whole(self, answer: Any, whole_end: float | None) -> bytes:
        chunks, size = [], 0
        try:
            while chunk := await answer.read(self.upstream.limits.idle, whole_end):
                size += len(chunk)
                if size > ANSWER_MAX:
                    self.exchange.error_type = "truncated"
                    raise UpstreamError(f"the provider's answer is over {ANSWER_MAX} bytes")
                chunks.append(chunk)
        except TransportError as exc:
            self.exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "truncated"
            raise gateway_error(exc, late="did not finish its answer") from None
        finally:
            answer.discard()
        return b"".join(chunks)

    # --- whole answers ---------------------------------------------------------------------------------------

    async def whole(self) -> web.StreamResponse:
        for turn in range(self.turns):
            last = self._last(turn)
            answer, whole_end = await self._open(last, False)
            status, content_type = answer.status, answer.content_type
            raw = await self._read_whole(answer, whole_end)
            if not 200 <= status < 300:
                # The provider's own refusal, passed on as it came (nothing has gone to the client yet).
                raise UpstreamReply(status, raw, {"Content-Type": content_type or "application/json"})
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return self._whole_response(raw)
            self.usage.add(parsed.get("usage"))
            mine, theirs = split_calls(answer_calls(parsed), self.names)
            if last or not mine or theirs:
                if turn == 0 and not mine:
                    return self._whole_response(raw)  # no tool round: the provider's bytes, untouched
                return self._whole_response(orjson.dumps(client_answer(parsed, self.names, self.usage)))
            self.messages.append(assistant_message(parsed))
            self.messages.extend(await self._run_tools(mine))
        raise AssertionError("the last turn is offered no MCP tools")  # pragma: no cover

    def _whole_response(self, body: bytes) -> web.Response:
        exchange = self.exchange
        if exchange.scanner is not None:
            exchange.scanner.whole(body)
        exchange.bytes_out = len(body)
        exchange.first_chunk_at = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        if exchange.request_id:
            headers["X-Request-ID"] = exchange.request_id
        return web.Response(body=body, headers=headers)

    # --- streams ---------------------------------------------------------------------------------------------

    async def streamed(self) -> web.StreamResponse:
        exchange = self.exchange
        response: web.StreamResponse | None = None
        stream_id: str | None = None
        try:
            for turn in range(self.turns):
                last = self._last(turn)
                answer, whole_end = await self._open(last, True)
                if not 200 <= answer.status < 300 or answer.content_type != "text/event-stream":
                    raw = await self._read_whole(answer, whole_end)
                    if response is None:
                        raise UpstreamReply(
                            answer.status, raw, {"Content-Type": answer.content_type or "application/json"}
                        )
                    log.warning("provider refused a later turn of an MCP stream", status=answer.status)
                    exchange.error_type = "truncated"
                    _abort(self.request)
                    return response
                if response is None:
                    response = await self._start(answer)
                state = StreamTurn(stream_id)
                if not await self._copy_turn(answer, whole_end, state, response):
                    return response
                stream_id = stream_id or state.first_id
                self.usage.add(state.usage)
                mine, theirs = split_calls(state.tool_calls, self.names)
                if last or not mine or theirs:
                    send_usage = not self.upstream.ask_usage
                    await self._write(response, state.ending(self.names, self.usage, send_usage))
                    if not send_usage and self.usage.seen and exchange.scanner is not None:
                        exchange.scanner.feed(summed_usage_event(self.usage))  # the record's usage: every turn
                    await response.write_eof()
                    return response
                self.messages.append(state.assistant_message())
                self.messages.extend(await self._run_tools(mine, response))
            raise AssertionError("the last turn is offered no MCP tools")  # pragma: no cover
        except ConnectionError:
            exchange.client_disconnected = True
            return response if response is not None else web.Response(status=499)
        except asyncio.CancelledError:
            exchange.client_disconnected = True
            raise
        except Exception:
            if response is None:
                raise  # rendered as the gateway's error: nothing has gone out
            log.exception("an MCP stream failed after it started; cutting it")
            _abort(self.request)
            return response

    async def _start(self, answer: Any) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if self.exchange.request_id:
            headers["X-Request-ID"] = self.exchange.request_id
        upstream_id = answer.headers.get("x-request-id")
        if upstream_id:
            self.exchange.upstream_request_id = upstream_id[:128]
            headers["X-Upstream-Request-ID"] = upstream_id
        response = web.StreamResponse(headers=headers)
        await response.prepare(self.request)
        return response

    async def _copy_turn(
        self, answer: Any, whole_end: float | None, state: StreamTurn, response: web.StreamResponse
    ) -> bool:
        """The turn's text to the client as it arrives; False when the provider broke off (the client's stream
        is then cut: it must not pass for a whole answer)."""
        try:
            while chunk := await answer.read(self.upstream.limits.idle, whole_end):
                out = state.feed(chunk)
                if out:
                    await self._write(response, out)
            tail = state.finish()
            if tail:
                await self._write(response, tail)
        except TransportError as exc:
            log.warning("provider stream broke off in an MCP loop", error=type(exc).__name__)
            self.exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "truncated"
            _abort(self.request)
            return False
        finally:
            answer.discard()
        return True

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        exchange = self.exchange
        if not exchange.bytes_out:
            exchange.first_chunk_at = time.perf_counter()
        if exchange.scanner is not None:
            exchange.scanner.feed(data)
        limit = self.upstream.write_timeout
        if limit is None:
            await response.write(data)
        else:
            try:
                async with asyncio.timeout(limit):
                    await response.write(data)
            except TimeoutError:
                exchange.error_type = "write_timeout"
                raise ConnectionResetError("the client stopped reading") from None
        exchange.bytes_out += len(data)

    # --- the tools -------------------------------------------------------------------------------------------

    async def _run_tools(
        self, calls: Sequence[Call], response: web.StreamResponse | None = None
    ) -> list[dict[str, Any]]:
        """Run one turn's MCP calls at once; each becomes a `tool` message, its error text when it failed."""
        results: list[str] = [""] * len(calls)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._run_one(c, results, i)) for i, c in enumerate(calls)]
            if response is not None:
                for one in calls:
                    await self._write(response, f": mcp {one.name} running\n\n".encode())
                pending: set[asyncio.Task[None]] = set(tasks)
                while pending:
                    _, pending = await asyncio.wait(pending, timeout=KEEPALIVE)
                    if pending:
                        await self._write(response, b": mcp tools running\n\n")
        return [
            {"role": "tool", "tool_call_id": one.id, "content": text} for one, text in zip(calls, results, strict=True)
        ]

    async def _run_one(self, one: Call, results: list[str], index: int) -> None:
        tool = self.tools[one.name]
        started = time.perf_counter()
        remaining = self.deadline - asyncio.get_running_loop().time()
        arguments = _arguments(one.arguments)
        if isinstance(arguments, str):
            text, outcome = arguments, "error"
        elif remaining <= 0:
            text, outcome = "error: the request's time for tools is spent", "timeout"
        else:
            result = await self.hub.call(tool, arguments, min(self.tool_timeout, remaining))
            text, outcome = result.text, result.outcome
        seconds = time.perf_counter() - started
        results[index] = text
        assert self.exchange.tool_runs is not None
        self.exchange.tool_runs.append(ToolRun(tool.name, tool.server, outcome, seconds))
        log.info(
            "mcp tool call",
            tool=tool.name,
            server=tool.server,
            outcome=outcome,
            seconds=round(seconds, 4),
            # Names only: the values may carry anything the conversation held.
            arguments=sorted(arguments) if isinstance(arguments, dict) else "[invalid]",
            request_id=self.exchange.request_id,
        )


def _arguments(text: str) -> dict[str, Any] | str:
    """A call's arguments as an object, or the error text the model gets when they are not one."""
    try:
        parsed = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return "error: the arguments are not valid JSON"
    if not isinstance(parsed, dict):
        return "error: the arguments must be a JSON object"
    return parsed


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
