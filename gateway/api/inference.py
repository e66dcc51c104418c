"""Routes whose JSON body names a model (chat completions, and every endpoint family like it): read, parse in the
route's dialect, resolve the candidates, check, then hand the call to `upstream`. A model group's request goes
through `groups.py`, which tries its deployments in the order its strategy gives.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import RawHeaders

from gateway.access import auth
from gateway.api import groups
from gateway.api.group_tools import GroupTurns
from gateway.api.groups import Encoder as Encoder  # routes.py names them here, with the handler
from gateway.api.groups import GroupCall, Snapshot
from gateway.api.groups import Translator as Translator
from gateway.api.inbound import Held, holding_body, read_body
from gateway.dialects.openai import ModelRequest, UsageChunkStrip, without_empty_messages
from gateway.errors import Handler
from gateway.exchange import EXCHANGE, Exchange
from gateway.mcp import loop
from gateway.mcp.hub import MCP
from gateway.routing import filters, resolve
from gateway.routing.filters import ModelFilter, Names
from gateway.routing.resolve import Candidates, Grouped, Route
from gateway.runtime.state import STATE
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.transport import UpstreamRequest

Parser = Callable[[bytes], ModelRequest]
# The provider a request is pinned to (the one holding state it refers to), when its model names none.
Pin = Callable[[web.Request, ModelRequest], str | None]
# Called once the answer is out (not when the gateway refused the request or the provider could not be reached).
Answered = Callable[[web.Request, Exchange], None]


def model_call(
    operation: str,
    parse: Parser,
    *,
    stream_usage: bool = False,
    drop_empty: bool = False,
    translator: Translator | None = None,
    encode: Encoder | None = None,
    stream_scanner: Callable[[], SseUsage] = SseUsage,
    pin: Pin | None = None,
    answered: Answered | None = None,
    budget: bool = True,
    mcp_tools: bool = False,
) -> Handler:
    """The handler of one operation: the provider's endpoint of that name serves it. `stream_usage`: streams may be
    asked for a final usage chunk (`stream_options`), for providers whose table entry says so. `drop_empty`: the
    body's `messages` lose their empty entries, for providers whose table entry does not turn that off.
    `translator`: the route speaks another dialect, whose parser gave the request in OpenAI's shape and whose
    translator gives the answer back in its own; `encode`, with it, writes that request in the provider's encoding
    when it is not JSON (a form upload). `stream_scanner` reads usage from the dialect's stream events when the
    answer is relayed as it is; `pin` and `answered` are for APIs whose answers leave state at the provider (the
    Responses API). `budget`: the call may use tokens, so they are reserved from the client's token budget first
    (counting tokens uses none). `mcp_tools`: with MCP on, the request gets the MCP tools its client may have, and
    the gateway runs them (gateway/mcp/loop.py) instead of a plain relay."""

    async def serve(request: web.Request, held: Held) -> web.StreamResponse:
        state = request.app[STATE]
        # Read once: a reload during this request does not change the table it finishes on.
        settings, table, model_filter, policies = state.settings, state.table, state.model_filter, state.policies
        group_views = state.groups
        exchange = request[EXCHANGE]
        limit = table.body_limits.get(operation) or settings.max_request_body_size
        raw = await read_body(request, limit, settings.read_timeout, held)
        exchange.bytes_in = len(raw)
        held.take_parse(raw)
        parsed = parse(raw)
        body = parsed.body
        if translator is not None and encode is None:
            raw = orjson.dumps(body)  # the request as the dialect translated it: what the provider receives
        exchange.stream = stream = parsed.stream
        exchange.request_body = body
        exchange.requested_model = parsed.model
        candidates = resolve.target(
            table,
            parsed.model,
            operation,
            query_provider=request.query.get("provider"),
            body_provider=parsed.provider,
            pinned=pin(request, parsed) if pin is not None else None,
        )
        if type(candidates) is Grouped:
            view = group_views[candidates.group.name.lower()]
            snapshot = Snapshot(settings, table.names, model_filter, policies, state.fleet)
            how = GroupCall(
                stream_usage,
                drop_empty,
                translator,
                request.raw_headers if translator is None else _translated(request.raw_headers, encode),
                stream_scanner,
                budget,
                encode,
            )
            deployments = await groups.prepare(request, operation, raw, parsed, candidates, view, snapshot, how)
            hub = request.app.get(MCP) if mcp_tools else None
            tools = loop.offer(request, hub, body) if hub is not None else None
            if tools and hub is not None:
                exchange.scanner = stream_scanner() if stream else JsonUsage()
                turns = GroupTurns(deployments, drop_empty, stream_usage)
                return await loop.run(request, exchange, hub, tools, body, turns, stream, settings.write_timeout)
            response = await groups.group_call(deployments, raw)
            if answered is not None:
                answered(request, exchange)
            return response
        route = first_allowed(request, exchange, candidates, model_filter, table.names)  # type: ignore[arg-type]
        provider = route.provider
        rewrite = False
        if drop_empty and provider.drop_empty_messages:
            kept = without_empty_messages(body["messages"])
            if kept is not None:
                # Checked and sent alike: the body without them, re-encoded (only then).
                body = {**body, "messages": kept}
                exchange.request_body = body
                rewrite = True
        filters.check_vision(settings.enable_vision, provider, body)
        if budget and auth.CLIENT in request:  # a client with a token budget reserves from it
            await auth.reserve_tokens(request, len(raw), body)
        rules = policies[provider.id]
        exchange.scanner = stream_scanner() if stream else JsonUsage()
        # Streams report usage only when asked; the client's own stream_options always win.
        ask = stream_usage and stream and provider.stream_usage and "stream_options" not in body
        exchange.usage_requested = ask
        # With MCP on, the request gets the MCP tools its client may have (None: a plain relay).
        hub = request.app.get(MCP) if mcp_tools else None
        tools = loop.offer(request, hub, body) if hub is not None else None
        if encode is None:
            payload = outbound.request_body(raw, body, route.model, route.requested, "provider" in body, ask, rewrite)
            content_type = _JSON
        else:
            payload, content_type = encode(body, route.model)
        upstream = UpstreamRequest(
            route.endpoint.method,
            route.endpoint.url,
            outbound.upstream_headers(
                request.raw_headers if translator is None else translated_headers(request.raw_headers, content_type),
                provider,
                # A translated answer, or an MCP loop's turns, are read by the gateway: they come unencoded.
                disable_compression=settings.disable_compression or translator is not None or tools is not None,
                request_id=exchange.request_id,
                inference=True,
            ),
            payload,
        )
        secret = query_secret(provider)
        if tools and hub is not None:
            pinned = loop.Pinned(
                request.app[call.TRANSPORT], upstream, route.model, rules.limits(stream), rules.retry, ask, secret
            )
            return await loop.run(request, exchange, hub, tools, body, pinned, stream, settings.write_timeout)
        response = await call.relay(
            request,
            request.app[call.TRANSPORT],
            upstream,
            rules.limits(stream),
            exchange,
            rules.retry,
            settings.write_timeout,
            # The usage chunk asked for on the client's behalf is read, not relayed: the client gets what the
            # provider would have sent it (a translated stream reads it itself).
            UsageChunkStrip() if ask and translator is None else None,
            secret=secret,
            translate=None if translator is None else translator(provider, route.model),
        )
        if answered is not None:
            answered(request, exchange)
        return response

    return holding_body(serve)


_BODY_HEADERS = frozenset({b"content-type", b"content-encoding"})
_JSON = b"application/json"


def translated_headers(headers: RawHeaders, content_type: bytes) -> RawHeaders:
    """The client's headers for a body the gateway wrote itself (of `content_type`, unencoded)."""
    return (*_without_body_headers(headers), (b"Content-Type", content_type))


def _translated(headers: RawHeaders, encode: Encoder | None) -> RawHeaders:
    """A model group's client headers for a translated body: JSON, or (encoded) their content type per deployment."""
    return _without_body_headers(headers) if encode is not None else translated_headers(headers, _JSON)


def _without_body_headers(headers: RawHeaders) -> RawHeaders:
    return tuple(pair for pair in headers if pair[0].lower() not in _BODY_HEADERS)


def first_allowed(
    request: web.Request, exchange: Exchange, candidates: Candidates, model_filter: ModelFilter, names: Names
) -> Route:
    """The first candidate the gateway's model filter and the client's policy allow, each judging the route (the
    provider, the model name it receives); `names` are the table's provider names, against which the policy's
    entries are read. A candidate either refuses is skipped, never tried. When none is allowed, the first one's
    refusal is the answer. The record names the candidate taken (or refused)."""
    first = candidates[0]
    if len(candidates) > 1:
        for route in candidates:
            pid, model = route.provider.id, route.model
            if model_filter.allows(pid, model) and auth.allows_model(request, pid, model, names):
                exchange.provider, exchange.model = pid, model
                return route
    exchange.provider, exchange.model = first.provider.id, first.model
    model_filter.check(first.provider.id, first.model)
    auth.check_model(request, first.provider.id, first.model, names)
    return first
