"""The routes, kept thin: each reads the request, resolves, checks, translates, then hands off to `upstream`."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.access import auth
from gateway.api import inbound
from gateway.errors import GatewayError, UpstreamReply
from gateway.exchange import EXCHANGE
from gateway.routing import filters as policy
from gateway.routing import resolve as routing
from gateway.runtime.state import STATE
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream import call as upstream
from gateway.upstream import listing as model_list
from gateway.upstream import outbound

_JSON = "application/json"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # Read once: a reload during this request does not change the table it finishes on.
    settings, table, model_filter, policies = state.settings, state.table, state.model_filter, state.policies
    exchange = request[EXCHANGE]
    exchange.operation = "chat"
    raw = await inbound.read_body(request, settings.max_request_body_size, settings.read_timeout)
    exchange.bytes_in = len(raw)
    chat = inbound.parse_chat(raw)
    exchange.stream = chat.stream
    exchange.request_body = chat.body
    route = routing.resolve(
        table, chat.model, query_provider=request.query.get("provider"), body_provider=chat.provider
    )
    exchange.provider, exchange.model = route.provider.id, route.model
    model_filter.check(route.provider.id, route.model)
    auth.check_model(request, route.provider.id, route.model)
    policy.check_vision(settings.enable_vision, route.provider, chat.body)
    provider = route.provider
    call = policies[provider.id]
    exchange.scanner = SseUsage() if chat.stream else JsonUsage()
    # Streams report usage only when asked; the client's own stream_options always win.
    exchange.usage_requested = ask_usage = chat.stream and provider.stream_usage and "stream_options" not in chat.body
    return await upstream.relay(
        request,
        request.app[upstream.POOL],
        provider.chat.method,
        provider.chat_url,
        outbound.upstream_headers(
            request.raw_headers,
            provider,
            disable_compression=settings.disable_compression,
            request_id=exchange.request_id,
        ),
        outbound.chat_body(raw, chat.body, route, provider_field="provider" in chat.body, ask_usage=ask_usage),
        call.limits(chat.stream),
        exchange,
        call.retry,
        settings.write_timeout,
    )


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pool = request.app[upstream.POOL]
    exchange = request[EXCHANGE]
    exchange.operation = "models"
    table, model_filter, policies = state.table, state.model_filter, state.policies
    timeout = state.settings.response_header_timeout
    name = request.query.get("provider")
    if name:
        provider = routing.named(table, name)
        exchange.provider = provider.id
        routing.require_served(provider)
        try:
            models = await model_list.fetch(pool, provider, policies[provider.id].stream.headers, exchange.request_id)
        except (GatewayError, UpstreamReply) as exc:
            exchange.listing_failures = [(provider.id, model_list.failure_kind(exc))]
            raise
        data = model_list.prefixed(provider, models, model_filter)
        body = model_list.listing(auth.visible_models(request, data), {"provider": provider.id})
    else:
        # Each provider's list gets its own head limit (the table's timeouts.response_header, if any).
        limits = {pid: policy.stream.headers for pid, policy in policies.items()}
        exchange.listing_failures = []
        data = await model_list.list_all(
            pool,
            table.providers.values(),
            model_filter,
            timeout,
            exchange.request_id,
            limits,
            exchange.listing_failures,
        )
        body = model_list.listing(auth.visible_models(request, data))
    exchange.listed_models = [model["id"] for model in data]
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def proxy(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings, table, policies = state.settings, state.table, state.policies
    exchange = request[EXCHANGE]
    exchange.operation = "proxy"
    name = request.match_info["provider"]
    provider = routing.named(table, name)
    exchange.provider = provider.id
    auth.check_proxy(request, provider.id)
    routing.require_served(provider)
    url = outbound.proxy_url(provider, _raw_tail(request, name), request.raw_path.partition("?")[2])
    body = await inbound.read_body(request, settings.max_request_body_size, settings.read_timeout)
    exchange.bytes_in = len(body)
    return await upstream.relay(
        request,
        request.app[upstream.POOL],
        request.method,
        url,
        outbound.upstream_headers(
            request.raw_headers,
            provider,
            disable_compression=settings.disable_compression,
            request_id=exchange.request_id,
        ),
        body if body or request.method not in ("GET", "DELETE") else None,
        policies[provider.id].proxy,
        exchange,
        policies[provider.id].retry,
        settings.write_timeout,
    )


def _raw_tail(request: web.Request, name: str) -> str:
    """The path after `/proxy/{provider}/` exactly as the client encoded it."""
    path = request.raw_path.partition("?")[0]
    head = f"/proxy/{name}/"
    return path[len(head) :] if path.startswith(head) else path.split("/", 3)[-1]


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"message":"OK"}', content_type=_JSON)


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.Response(status=503, body=b'{"status":"draining"}', content_type=_JSON)
    return web.Response(body=b'{"status":"ready"}', content_type=_JSON)
