"""`/proxy/{provider}/{path}`: a raw call to a provider's API under its base URL, with its credentials, relayed
as it comes back. The client's path may never leave the provider's base URL."""

from __future__ import annotations

from aiohttp import web

from gateway.access import auth
from gateway.api.inbound import Held, holding_body, read_body
from gateway.exchange import EXCHANGE
from gateway.routing import resolve
from gateway.runtime.state import STATE
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.transport import UpstreamRequest


async def _proxy(request: web.Request, held: Held) -> web.StreamResponse:
    state = request.app[STATE]
    settings, table, policies = state.settings, state.table, state.policies
    exchange = request[EXCHANGE]
    name = request.match_info["provider"]
    provider = resolve.named(table, name)
    exchange.provider = provider.id
    auth.check_proxy(request, provider.id)
    resolve.require_served(provider)
    path, _, query = _origin_form(request.raw_path).partition("?")
    url = outbound.proxy_url(provider, _raw_tail(path, name), query)
    body = await read_body(request, settings.max_request_body_size, settings.read_timeout, held)
    exchange.bytes_in = len(body)
    headers = outbound.upstream_headers(
        request.raw_headers, provider, disable_compression=settings.disable_compression, request_id=exchange.request_id
    )
    rules = policies[provider.id]
    return await call.relay(
        request,
        request.app[call.TRANSPORT],
        UpstreamRequest(
            request.method, url, headers, body if body or request.method not in ("GET", "DELETE") else None
        ),
        rules.proxy,
        exchange,
        rules.retry,
        settings.write_timeout,
        secret=query_secret(provider),
    )


def _origin_form(target: str) -> str:
    """The request target as path and query: an absolute-form target (`http://host/proxy/...`, as a client talking
    to a forward proxy sends) loses its scheme and authority."""
    if target.startswith("/"):
        return target
    scheme, sep, rest = target.partition("://")
    return "/" + rest.partition("/")[2] if sep else "/"


def _raw_tail(path: str, name: str) -> str:
    """The path after `/proxy/{provider}/` exactly as the client encoded it."""
    head = f"/proxy/{name}/"
    return path[len(head) :] if path.startswith(head) else path.split("/", 3)[-1]


proxy = holding_body(_proxy)
