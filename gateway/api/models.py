"""`/v1/models`: every served provider's list, or one provider's (`?provider=`), filtered for the client (and by
`?service_type=`), each model with what the table knows of its capabilities, with the table's model groups listed
once each (with the deployments behind them); and `/v1/models/{id}`, one model, as
the SDKs' `models.retrieve` asks for it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson
from aiohttp import web

from gateway.access import auth
from gateway.config.capabilities import SERVICE_TYPES
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamReply
from gateway.exchange import EXCHANGE, Listing
from gateway.routing import resolve
from gateway.routing.deployments import GroupView
from gateway.routing.filters import ModelFilter, Names
from gateway.runtime.state import STATE
from gateway.upstream import listing
from gateway.upstream.call import TRANSPORT

_JSON = "application/json"


async def list_models(request: web.Request) -> web.Response:
    data, provider = await visible_models(request)
    if provider is None:
        # Each model group once, first, from the table (no provider is asked).
        state = request.app[STATE]
        groups = _groups(request, state.groups.values(), state.model_filter, state.table.names)
        wanted = request.query.get("service_type")  # checked by visible_models
        if wanted is not None:
            groups = [group for group in groups if group.get("service_type") == wanted]
        data = [*groups, *data]
    body = listing.listing(data, None if provider is None else {"provider": provider})
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def visible_models(
    request: web.Request, only: Collection[str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every served provider's models (of the providers in `only`, when given), or the `?provider=` one's, as the
    client may see them (ids `provider/model`), of the `?service_type=` only when one is asked for, and the
    provider named."""
    state = request.app[STATE]
    transport = request.app[TRANSPORT]
    exchange = request[EXCHANGE]
    table, model_filter, policies = state.table, state.model_filter, state.policies
    timeout = state.settings.response_header_timeout
    exchange.listing = found = Listing()
    wanted = request.query.get("service_type")
    if wanted is not None and wanted not in SERVICE_TYPES:
        raise InvalidRequest(
            f"unknown service_type {wanted[:64]!r}; one of: {', '.join(SERVICE_TYPES)}", code="invalid_service_type"
        )
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
        named: str | None = provider.id
    else:
        # Each provider's list gets its own head limit (the table's timeouts.response_header, if any).
        limits = {pid: rules.stream.headers for pid, rules in policies.items()}
        data = await listing.list_all(
            transport,
            [p for p in table.providers.values() if only is None or p.id in only],
            model_filter.allows,
            timeout,
            exchange.request_id,
            limits,
            found.failures,
        )
        named = None
    found.listed = [model["id"] for model in data]
    visible = auth.visible_models(request, data, table.names)
    if wanted is not None:
        # Models whose type is unknown are not listed under any type.
        visible = [model for model in visible if model.get("service_type") == wanted]
    return visible, named


async def retrieve_model(request: web.Request) -> web.Response:
    """One model by id (`provider/model`, or a name the table routes): asked of the provider that would serve it."""
    state = request.app[STATE]
    exchange = request[EXCHANGE]
    table, model_filter, policies = state.table, state.model_filter, state.policies
    model_id = request.match_info["model"]
    exchange.listing = found = Listing()
    view = state.groups.get(model_id.lower())
    if view is not None:
        # A model group answers as /v1/models lists it, from the table.
        entries = _groups(request, (view,), model_filter, table.names)
        if not entries:
            raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have access to it.")
        return web.Response(body=orjson.dumps(entries[0]), content_type=_JSON)
    route = resolve.resolve(table, model_id, "models")[0]
    provider = route.provider
    exchange.provider, exchange.model = provider.id, route.model
    try:
        models = await listing.fetch(
            request.app[TRANSPORT], provider, policies[provider.id].stream.headers, exchange.request_id
        )
    except (GatewayError, UpstreamReply) as exc:
        found.failures.append((provider.id, listing.failure_kind(exc)))
        raise
    wanted = [m for m in listing.prefixed(provider, models, model_filter.allows) if m["id"] == route.model_id]
    visible = auth.visible_models(request, wanted, table.names)
    if not visible:
        raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have access to it.")
    found.listed = [visible[0]["id"]]
    return web.Response(body=orjson.dumps(visible[0]), content_type=_JSON)


def _groups(
    request: web.Request, views: Iterable[GroupView], model_filter: ModelFilter, names: Names
) -> list[dict[str, Any]]:
    """Each model group once, with the deployments this client may use (by the same judgement as a request); a
    group with none is left out. From the table: no provider is asked."""
    listed = []
    for view in views:
        deployments = [
            {"provider": member.provider.id, "model": member.model}
            for member in view.members
            if model_filter.allows(member.provider.id, member.model)
            and auth.allows_model(request, member.provider.id, member.model, names)
        ]
        if deployments:
            group = view.group
            entry: dict[str, Any] = {
                "id": group.name,
                "object": "model",
                "created": 0,
                "owned_by": "gateway",
                "strategy": group.strategy,
                "deployments": deployments,
            }
            # A group has a service type when every deployment is known to be of that one type.
            types = {
                member.provider.catalog.of(member.model).service_type
                for member in view.members
                if {"provider": member.provider.id, "model": member.model} in deployments
            }
            if len(types) == 1 and None not in types:
                entry["service_type"] = types.pop()
            listed.append(entry)
    return listed
