"""The chat loop: a chat request gets the MCP tools its client may have, added to its own `tools`; when the model
calls them, the gateway runs them and asks the model again with their results, until it answers or calls one of
the client's own tools (which goes back to the client untouched), within MCP_MAX_ITERATIONS model turns and the
MCP_LOOP_TIMEOUT budget. The chat handler calls `offer` (cheap, no I/O) and, when it gives tools, `run`, with the
request's `Route`: how each turn reaches a provider (`Pinned`: the provider the route resolved, with its retries; a
model group's route, in api/groups.py, picks a deployment per turn, with the group's fallbacks).

Streams: one stream to the client. Text reaches it as each turn produces it; the gateway's own tool calls do not
(a tool call the client did not make would break its own loop): while they run it reads SSE comments,
`: mcp <tool> running`, which SDKs skip. Every turn after the first carries the first turn's chunk id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

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
from gateway.upstream.scrub import scrub
from gateway.upstream.timeouts import Limits, RetryPolicy
from gateway.upstream.transport import (
    Response,
    TimedOut,
    Transport,
    TransportError,
    UpstreamRequest,
    gateway_error,
)

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


class Turn(NamedTuple):
    """One turn's answer as its route opened it: the head (after the retries and, in a group, the fallbacks), the
    limits of reading the body, whether the gateway asked for the stream's usage chunk the client did not, the key
    the provider carries in its URL query (scrubbed from a refusal); for a route that measures its providers, who
    sees the turn's bytes as they arrive (`watch`: a stream's chunks, a whole answer's body) and who hears how the
    turn ended (`ended`: its error type, None when whole)."""

    answer: Response
    idle: float | None
    whole_end: float | None  # loop time
    ask_usage: bool
    secret: bytes | None = None
    watch: Callable[[bytes], None] | None = None
    ended: Callable[[str | None], None] | None = None


class Route(Protocol):
    async def open(self, exchange: Exchange, body: dict[str, Any], stream: bool) -> Turn:
        """The provider's answer head to one turn: `body` is the turn's request in the client's terms (the
        conversation so far, the tools); the route sets the model its provider receives, and the usage option."""
        ...


@dataclass(frozen=True, slots=True)
class Pinned:
    """The provider the chat handler resolved, asked once per turn (with its retries)."""

    transport: Transport
    request: UpstreamRequest  # method, URL and headers; the body is the turn's
    model: str  # the model name the provider receives
    limits: Limits
    retry: RetryPolicy
    ask_usage: bool  # the gateway asks for stream usage the client did not (the provider's table entry says so)
    secret: bytes | None = None

    async def open(self, exchange: Exchange, body: dict[str, Any], stream: bool) -> Turn:
        started = self.transport.loop.time()
        payload = turn_payload(body, self.model, stream and self.ask_usage)
        request = self.request._replace(body=payload)
        answer = await call.open_answer(self.transport, request, self.limits, exchange, self.retry, started)
        whole_end = None if self.limits.whole is None else started + self.limits.whole
        return Turn(answer, self.limits.idle, whole_end, self.ask_usage, self.secret)


def turn_payload(body: dict[str, Any], model: str, ask_usage: bool, messages: list[Any] | None = None) -> bytes:
    """A turn's bytes for a provider: `body` with the model it receives, the usage option the gateway asks for,
    and (`messages`) the conversation as that provider takes it."""
    payload = dict(body)
    payload["model"] = model
    if messages is not None:
        payload["messages"] = messages
    if ask_usage:
        payload["stream_options"] = {"include_usage": True}
    return orjson.dumps(payload)


async def run(
    request: web.Request,
    exchange: Exchange,
    hub: Hub,
    tools: dict[str, Tool],
    body: dict[str, Any],
    route: Route,
    stream: bool,
    write_timeout: float | None,
) -> web.StreamResponse:
    loop = Loop(request, exchange, hub, tools, body, route, write_timeout)
    return await (loop.streamed() if stream else loop.whole())


class Loop:
    def __init__(
        self,
        request: web.Request,
        exchange: Exchange,
        hub: Hub,
        tools: dict[str, Tool],
        body: dict[str, Any],
        route: Route,
        write_timeout: float | None,
    ) -> None:
        settings = hub.settings
        self.request, self.exchange, self.hub, self.tools, self.route = request, exchange, hub, tools, route
        self.write_timeout = write_timeout
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

    def _turn_body(self, last: bool) -> dict[str, Any]:
        """The turn's request in the client's terms: its body with the conversation so far, its tools and (but on
        the last turn) the MCP tools."""
        payload = dict(self.body)
        payload.pop("provider", None)
        payload["messages"] = self.messages
        tools = self.without_mcp if last else self.with_mcp
        if tools:
            payload["tools"] = tools
        else:
            payload.pop("tools", None)
            payload.pop("tool_choice", None)
            payload.pop("parallel_tool_calls", None)
        return payload

    async def _open(self, last: bool, stream: bool) -> Turn:
        return await self.route.open(self.exchange, self._turn_body(last), stream)

    async def _read_whole(self, turn: Turn) -> bytes:
        answer, chunks, size = turn.answer, [], 0
        try:
            while chunk := await answer.read(turn.idle, turn.whole_end):
                size += len(chunk)
                if size > ANSWER_MAX:
                    self.exchange.error_type = "truncated"
                    raise UpstreamError(f"the provider's answer is over {ANSWER_MAX} bytes")
                chunks.append(chunk)
        except TransportError as exc:
            self.exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "truncated"
            _ended(turn, self.exchange.error_type)
            raise gateway_error(exc, late="did not finish its answer") from None
        finally:
            answer.discard()
        return b"".join(chunks)

    def _refusal(self, turn: Turn, raw: bytes) -> UpstreamReply:
        """The provider's own refusal of a turn, to pass on as it came (scrubbed of a key in its URL query)."""
        if turn.secret is not None:
            raw = scrub(raw, turn.secret)
        return UpstreamReply(turn.answer.status, raw, {"Content-Type": turn.answer.content_type or "application/json"})

    # --- whole answers ---------------------------------------------------------------------------------------

    async def whole(self) -> web.StreamResponse:
        for n in range(self.turns):
            last = self._last(n)
            turn = await self._open(last, False)
            status = turn.answer.status
            raw = await self._read_whole(turn)
            if not 200 <= status < 300:
                # The provider's own refusal, passed on as it came (nothing has gone to the client yet).
                raise self._refusal(turn, raw)
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            if turn.watch is not None:
                turn.watch(raw)
            _ended(turn, None)
            if not isinstance(parsed, dict):
                return self._whole_response(raw)
            self.usage.add(parsed.get("usage"))
            mine, theirs = split_calls(answer_calls(parsed), self.names)
            if last or not mine or theirs:
                if n == 0 and not mine:
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
            for n in range(self.turns):
                last = self._last(n)
                turn = await self._open(last, True)
                answer = turn.answer
                if not 200 <= answer.status < 300 or answer.content_type != "text/event-stream":
                    raw = await self._read_whole(turn)
                    _ended(turn, None)
                    if response is None:
                        raise self._refusal(turn, raw)
                    log.warning("provider refused a later turn of an MCP stream", status=answer.status)
                    exchange.error_type = "truncated"
                    _abort(self.request)
                    return response
                if response is None:
                    response = await self._start(turn)
                state = StreamTurn(stream_id)
                if not await self._copy_turn(turn, state, response):
                    return response
                _ended(turn, None)
                stream_id = stream_id or state.first_id
                self.usage.add(state.usage)
                mine, theirs = split_calls(state.tool_calls, self.names)
                if last or not mine or theirs:
                    send_usage = not turn.ask_usage
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

    async def _start(self, turn: Turn) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if self.exchange.request_id:
            headers["X-Request-ID"] = self.exchange.request_id
        upstream_id = turn.answer.headers.get("x-request-id")
        if upstream_id and turn.secret is not None:
            upstream_id = scrub(upstream_id.encode("latin-1"), turn.secret).decode("latin-1")
        if upstream_id:
            self.exchange.upstream_request_id = upstream_id[:128]
            headers["X-Upstream-Request-ID"] = upstream_id
        response = web.StreamResponse(headers=headers)
        await response.prepare(self.request)
        return response

    async def _copy_turn(self, turn: Turn, state: StreamTurn, response: web.StreamResponse) -> bool:
        """The turn's text to the client as it arrives; False when the provider broke off (the client's stream
        is then cut: it must not pass for a whole answer)."""
        answer, watch = turn.answer, turn.watch
        try:
            while chunk := await answer.read(turn.idle, turn.whole_end):
                if watch is not None:
                    watch(chunk)
                out = state.feed(chunk)
                if out:
                    await self._write(response, out)
            tail = state.finish()
            if tail:
                await self._write(response, tail)
        except TransportError as exc:
            log.warning("provider stream broke off in an MCP loop", error=type(exc).__name__)
            self.exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "truncated"
            _ended(turn, self.exchange.error_type)
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
        limit = self.write_timeout
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
        at, started = time.time(), time.perf_counter()
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
        self.exchange.tool_runs.append(ToolRun(tool.name, tool.server, outcome, seconds, at))
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


def _ended(turn: Turn, error_type: str | None) -> None:
    if turn.ended is not None:
        turn.ended(error_type)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
