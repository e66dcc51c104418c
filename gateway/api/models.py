"""`/v1/models`: every served provider's list, or one provider's (`?provider=`), filtered for the client."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.access import auth
from gateway.errors import GatewayError, UpstreamReply
from gateway.exchange import EXCHANGE, Listing
from gateway.routing import resolve
from gateway.runtime.state import STATE
from gateway.upstream import listing
from gateway.upstream.call import TRANSPORT

_JSON = "application/json"


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    transport = request.app[TRANSPORT]
    exchange = request[EXCHANGE]
    table, model_filter, policies = state.table, state.model_filter, state.policies
    timeout = state.settings.response_header_timeout
    exchange.listing = found = Listing()
    name = request.query.get("provider")
    if name:
        provider = resolve.named(table, name)
        exchange.provider = provider.id
        resolve.endpoint(provider, "models")
        resolve.require_served(provider)
        try:
            models = await listing.fetch(transport, provider, policies[provider.id].stream.headers, exchange.request_id)
        except (GatewayError, UpstreamReply) as exc:
            found.failures.append((provider.id, listing.failure_kind(exc)))
            raise
        data = listing.prefixed(provider, models, model_filter.allows)
        body = listing.listing(auth.visible_models(request, data, table.names), {"provider": provider.id})
    else:
        # Each provider's list gets its own head limit (the table's timeouts.response_header, if any).
        limits = {pid: rules.stream.headers for pid, rules in policies.items()}
        data = await listing.list_all(
            transport,
            table.providers.values(),
            model_filter.allows,
            timeout,
            exchange.request_id,
            limits,
            found.failures,
        )
        body = listing.listing(auth.visible_models(request, data, table.names))
    found.listed = [model["id"] for model in data]
    return web.Response(body=orjson.dumps(body), content_type=_JSON)
