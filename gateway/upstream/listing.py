"""`/v1/models`: ask providers for their lists concurrently, map each declared list shape to OpenAI's, filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from gateway.config.providers import Provider
from gateway.errors import UpstreamError, UpstreamReply, UpstreamTimeout
from gateway.upstream.call import fetch as fetch_whole
from gateway.upstream.scrub import query_secret, scrub
from gateway.upstream.transport import Transport, TransportError, UpstreamRequest, gateway_error

log = structlog.get_logger("gateway.models")

# The code of a model list that arrived but cannot be read (too big, not JSON, not the declared shape).
INVALID = "upstream_invalid_answer"
MAX_LIST_BYTES = 16 * 1024 * 1024
# (provider id, bare model name) -> whether the gateway lets it be listed (the model filter).
Allowed = Callable[[str, str], bool]


async def fetch(transport: Transport, provider: Provider, timeout: float, request_id: str = "") -> list[dict[str, Any]]:
    """One provider's models in OpenAI's shape, ids bare; its own error answers raise UpstreamReply."""
    endpoint = provider.endpoints["models"]
    headers = [*provider.headers, (b"Accept-Encoding", b"identity")]
    if request_id:
        headers.append((b"X-Request-ID", request_id.encode()))
    upstream = UpstreamRequest(endpoint.method, endpoint.url, headers, None)
    try:
        async with asyncio.timeout(timeout):
            status, answer, body = await fetch_whole(transport, upstream, timeout, MAX_LIST_BYTES)
    except (TimeoutError, TransportError) as exc:
        raise gateway_error(exc, f"provider {provider.id!r}", timeout, "did not list its models") from None
    if len(body) > MAX_LIST_BYTES:
        raise UpstreamError(f"provider {provider.id!r} sent a model list over {MAX_LIST_BYTES} bytes", code=INVALID)
    if status >= 400:
        secret = query_secret(provider)
        # A provider that echoes its request URL in an error would hand the client its query key.
        shown = scrub(body, secret) if secret is not None else body
        raise UpstreamReply(status, shown, {"Content-Type": answer.get("Content-Type", "application/json")})
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            f"provider {provider.id!r} answered its model list with invalid JSON", code=INVALID
        ) from None
    return normalize(provider, payload)


def normalize(provider: Provider, payload: Any) -> list[dict[str, Any]]:
    """Map a list answer to OpenAI model objects by the provider's declared shape; skip what does not fit."""
    shape = provider.list_shape
    items: Any = payload
    for key in shape.items:
        items = items.get(key) if isinstance(items, dict) else None
    if not isinstance(items, list):
        raise UpstreamError(
            f"provider {provider.id!r} answered a model list without '{'.'.join(shape.items)}'", code=INVALID
        )
    models = []
    for item in items:
        if not isinstance(item, dict):
            continue
        model_id = item.get(shape.id)
        if not isinstance(model_id, str) or not model_id:
            continue
        if shape.strip_id_prefix and model_id.startswith(shape.strip_id_prefix):
            model_id = model_id[len(shape.strip_id_prefix) :]
        owned_by = item.get(shape.owned_by) if shape.owned_by else None
        models.append(
            {
                "id": model_id,
                "object": "model",
                "created": _epoch(item.get(shape.created) if shape.created else None),
                "owned_by": owned_by if isinstance(owned_by, str) and owned_by else provider.id,
                "served_by": provider.id,
            }
        )
    return models


def _epoch(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return 0
        # A time without a zone is taken as UTC, never as the gateway's local time.
        return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    return 0


def prefixed(provider: Provider, models: Iterable[dict[str, Any]], allowed: Allowed) -> list[dict[str, Any]]:
    """Ids become `provider/model`, each with what the table knows of its capabilities (service type,
    modalities, features, context window; unknown ones left out); what the filter refuses is left out."""
    of = provider.catalog.of
    return [
        {**model, "id": f"{provider.id}/{model['id']}", **of(model["id"]).fields()}
        for model in models
        if allowed(provider.id, model["id"])
    ]


async def list_all(
    transport: Transport,
    providers: Iterable[Provider],
    allowed: Allowed,
    timeout: float,
    request_id: str = "",
    limits: Mapping[str, float] | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Every served provider at once; one that fails or stalls is left out of the list, never fails it.

    `limits` (provider id -> seconds) holds the table's per-provider head limits; `timeout` is the default.
    `failures`, when given, receives (provider id, failure kind) for each provider left out."""
    served = [p for p in providers if p.served and "models" in p.endpoints]
    limits = limits or {}
    results = await asyncio.gather(
        *(fetch(transport, p, limits.get(p.id, timeout), request_id) for p in served), return_exceptions=True
    )
    data: list[dict[str, Any]] = []
    for provider, result in zip(served, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            log.warning("model list failed", provider=provider.id, error=_reason(result))
            if failures is not None:
                failures.append((provider.id, failure_kind(result)))
            continue
        data.extend(prefixed(provider, result, allowed))
    return data


def failure_kind(exc: Exception) -> str:
    """The metrics' kind of a failed listing: connect, timeout, status (an error answer) or invalid."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamReply):
        return "status"
    if isinstance(exc, UpstreamError) and exc.code != INVALID:
        return "connect"
    return "invalid"


def _reason(exc: Exception) -> str:
    if isinstance(exc, UpstreamReply):
        return f"status {exc.status}"
    return str(exc) or type(exc).__name__


def listing(data: list[dict[str, Any]], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**(extra or {}), "object": "list", "data": data}
