"""The Inference API's model lists (seed 001): `GET /api/v1/inference/models` lists each provider's synced list
(with when it was synced), and asks a provider never synced live, as `/v1/models` does; `POST /models/sync`
fetches one provider's list now (upstream/listing.py: its auth, time limits and list shape) and stores it in the
usage store. Both in the envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.access import auth
from gateway.api.models import visible_models
from gateway.api.registry import json_object, may_change, small_body
from gateway.api.usage import reading
from gateway.config.capabilities import SERVICE_TYPES
from gateway.config.providers import Provider
from gateway.dialects import envelope
from gateway.errors import GatewayError, InvalidRequest, NotFound, StoreUnavailable, UpstreamReply
from gateway.exchange import EXCHANGE, Listing
from gateway.routing import resolve
from gateway.runtime.state import STATE
from gateway.upstream import listing
from gateway.upstream.call import TRANSPORT
from gateway.usage import registry as stored
from gateway.usage.registry import SyncedModel
from gateway.usage.service import USAGE, Usage

_JSON = "application/json"


async def list_models(request: web.Request) -> web.Response:
    """Synced lists where there are some; a served provider never synced (or every one, with the store off or not
    open yet) is asked live, its models with `syncedAt: null`."""
    state = request.app[STATE]
    table = state.table
    name = request.query.get("provider")
    usage = request.app.get(USAGE)
    rows: list[SyncedModel] = []
    if usage is not None and usage.ready:
        provider = resolve.named(table, name) if name else None
        async with reading():
            rows = await stored.synced(usage.store, None if provider is None else provider.id)
    served = {p.id: p for p in table.providers.values() if p.served}
    rows = [row for row in rows if row.provider in served]
    synced_ids = {row.provider for row in rows}
    data: list[dict[str, Any]] = []
    try:
        if name:
            if not rows:
                data, _ = await visible_models(request)
        elif any(pid not in synced_ids for pid in served):
            data, _ = await visible_models(request, only=[pid for pid in served if pid not in synced_ids])
    except UpstreamReply as reply:
        return _provider_failure(request, reply, name or "")
    models = [_shown(model, None) for model in data]
    synced_at = {}
    synced_data: list[dict[str, Any]] = []
    for pid in sorted(synced_ids):
        mine = [row for row in rows if row.provider == pid]
        synced_at.update({f"{pid}/{row.model}": row.synced_at for row in mine})
        synced_data += listing.prefixed(served[pid], [_bare(row) for row in mine], state.model_filter.allows)
    visible = auth.visible_models(request, synced_data, table.names)
    wanted = request.query.get("service_type")
    if wanted is not None:
        if wanted not in SERVICE_TYPES:
            raise InvalidRequest(f"unknown service_type {wanted[:64]!r}; one of: {', '.join(SERVICE_TYPES)}")
        visible = [model for model in visible if model.get("service_type") == wanted]
    models += [_shown(model, synced_at[model["id"]]) for model in visible]
    return web.Response(body=envelope.success(models), content_type=_JSON)


async def sync_models(request: web.Request) -> web.Response:
    """Fetch one provider's list now and store it, replacing the one stored before."""
    may_change(request, "sync model lists")
    usage = _store(request)
    state = request.app[STATE]
    name = _provider_name(await small_body(request))
    exchange = request[EXCHANGE]
    exchange.listing = found = Listing()
    provider = resolve.named(state.table, name)
    exchange.provider = provider.id
    resolve.endpoint(provider, "models")
    resolve.require_served(provider)
    try:
        models = await listing.fetch(
            request.app[TRANSPORT], provider, state.policies[provider.id].stream.headers, exchange.request_id
        )
    except UpstreamReply as reply:
        found.failures.append((provider.id, listing.failure_kind(reply)))
        return _provider_failure(request, reply, provider.id)
    except GatewayError as exc:
        found.failures.append((provider.id, listing.failure_kind(exc)))
        raise
    async with reading():
        synced_at = await stored.store_models(
            usage.store, provider.id, [(m["id"], m["owned_by"], m["created"]) for m in models]
        )
    found.listed = [f"{provider.id}/{m['id']}" for m in models]
    data = {
        "provider": provider.id,
        "syncedAt": _iso(synced_at),
        "count": len(models),
        "models": [{"id": m["id"], "ownedBy": m["owned_by"], "created": m["created"]} for m in models],
    }
    return web.Response(body=envelope.success(data), content_type=_JSON)


def _store(request: web.Request) -> Usage:
    usage = request.app.get(USAGE)
    if usage is None:
        raise NotFound("synced model lists are kept in the usage store, which is off: set USAGE_STORE")
    if not usage.ready:
        raise StoreUnavailable("the usage store is not open yet; try again shortly")
    return usage


def _provider_name(raw: bytes) -> str:
    body = json_object(raw)
    unknown = [key for key in body if key != "provider"]
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0][:64]!r}; a sync takes: provider")
    name = body.get("provider")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("provider is required")
    return name


def _provider_failure(request: web.Request, reply: UpstreamReply, name: str) -> web.Response:
    """The provider's own refusal of its list, in the envelope (and without its key)."""
    provider: Provider | None = request.app[STATE].table.lookup(name)
    secrets = () if provider is None else envelope.provider_secrets(provider)
    status, content_type, body = envelope.provider_failure(reply.status, reply.body, name, secrets)
    return web.Response(status=status, body=body, content_type=content_type)


def _bare(row: SyncedModel) -> dict[str, Any]:
    return {
        "id": row.model,
        "object": "model",
        "created": row.created,
        "owned_by": row.owned_by or row.provider,
        "served_by": row.provider,
    }


def _shown(model: dict[str, Any], synced_at: float | None) -> dict[str, Any]:
    """A model as the Inference API lists it: its bare id, the provider serving it, and when its list was synced."""
    return {
        "id": model["id"].partition("/")[2],
        "provider": model["served_by"],
        "ownedBy": model["owned_by"],
        "created": model["created"],
        "syncedAt": _iso(synced_at),
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
