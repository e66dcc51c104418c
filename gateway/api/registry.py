"""The Inference API's provider registry (seed 001): `GET|POST /api/v1/inference/providers` and
`GET|PUT|DELETE /api/v1/inference/providers/{idOrName}`, in the envelope.

A registered provider is a kind of the providers file (`type`) under a name of its own, its key read from the
variable `envVar` names; it lives in the usage store and joins the table on every replica (runtime/registry.py).
The file's own entries are listed too, read-only. Changes: admins only with client auth on; with auth off only
when REGISTRY_WRITE_ENABLE says anyone may (docs/api.md#the-provider-registry).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from gateway.access import auth
from gateway.api.inbound import BODY_BUDGET, read_body
from gateway.api.usage import reading
from gateway.config.providers import Provider, ProviderTable, env_prefix
from gateway.config.registry import Registration, entry_of, kind
from gateway.dialects import envelope
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, StoreUnavailable
from gateway.runtime.registry import REGISTRY, Registry
from gateway.runtime.state import STATE, GatewayState
from gateway.usage import registry as stored
from gateway.usage.service import USAGE

_JSON = "application/json"
FIELDS = ("name", "type", "defaultModel", "envVar", "url", "endpoints")
# A field named like a credential: refused with a message of its own (keys never go through this API).
_SECRET_NAME = re.compile(r"(?i)key|secret|token|passw|credential|auth|bearer")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_MAX_TEXT = 2048
BODY_LIMIT = 64 * 1024  # a registration (or a sync request) is a few hundred bytes


async def providers(request: web.Request) -> web.Response:
    """`/providers`: GET lists, POST registers."""
    return await (create_provider if request.method == "POST" else list_providers)(request)


async def provider(request: web.Request) -> web.Response:
    """`/providers/{idOrName}`: GET shows, PUT updates, DELETE unregisters."""
    handler = {"PUT": update_provider, "DELETE": delete_provider}.get(request.method, get_provider)
    return await handler(request)


async def list_providers(request: web.Request) -> web.Response:
    state = request.app[STATE]
    policy = auth.client_policy(request)
    shown = [_file_entry(state, p) for p in state.file_table.providers.values()]
    if request.app.get(USAGE) is not None:
        shown += [_registered(state, r) for r in await _registrations(request)]
    # A client sees the providers its policy lets it use; an admin, every one.
    data = [entry for entry in shown if policy.admin or policy.allows_provider(entry["name"])]
    return _answer(data)


async def get_provider(request: web.Request) -> web.Response:
    state = request.app[STATE]
    wanted = request.match_info["idOrName"]
    file_provider = _in_file(state.file_table, wanted)
    shown = (
        _file_entry(state, file_provider)
        if file_provider is not None
        else _registered(state, await _find(request, wanted))
    )
    policy = auth.client_policy(request)
    if not (policy.admin or policy.allows_provider(shown["name"])):
        raise NotFound(f"no provider {wanted[:64]!r}")  # as the list: what the client may not use, it does not see
    return _answer(shown)


async def create_provider(request: web.Request) -> web.Response:
    registry = _writable(request)
    state = request.app[STATE]
    body = _fields(await small_body(request), partial=False)
    now = time.time()
    registration = Registration(
        id=secrets.token_hex(6),
        name=body["name"],
        type=body["type"],
        env_var=body.get("envVar") or _default_env(body["name"]),
        default_model=body.get("defaultModel"),
        url=body.get("url"),
        endpoints=body.get("endpoints") or {},
        created=now,
        updated=now,
    )
    registration = _checked(state, registration)
    async with reading():
        if len(await stored.registrations(registry.usage.store)) >= stored.MAX_PROVIDERS:
            raise Conflict(f"the registry holds at most {stored.MAX_PROVIDERS} providers")
        if not await stored.add(registry.usage.store, registration):
            raise Conflict(f"a provider named {registration.name!r} is already registered")
        await registry.refresh()
    return _answer(_registered(state, registration), status=201)


async def update_provider(request: web.Request) -> web.Response:
    registry = _writable(request)
    state = request.app[STATE]
    wanted = request.match_info["idOrName"]
    _refuse_file_entry(state.file_table, wanted)
    body = _fields(await small_body(request), partial=True)
    current = await _find(request, wanted)
    changed = {_ATTRS[name]: value for name, value in body.items()}
    if "envVar" in body and body["envVar"] is None:
        changed["env_var"] = _default_env(body.get("name") or current.name)
    registration = _checked(state, _replaced(current, changed))
    async with reading():
        if not await stored.replace(registry.usage.store, registration, current.name):
            raise Conflict(
                f"a provider named {registration.name!r} is already registered, or {wanted[:64]!r} was removed"
            )
        await registry.refresh()
    return _answer(_registered(state, registration))


async def delete_provider(request: web.Request) -> web.Response:
    registry = _writable(request)
    state = request.app[STATE]
    wanted = request.match_info["idOrName"]
    _refuse_file_entry(state.file_table, wanted)
    current = await _find(request, wanted)
    async with reading():
        if not await stored.remove(registry.usage.store, current):
            raise NotFound(f"no registered provider {wanted[:64]!r}")
        await registry.refresh()
    return _answer({"id": current.id, "name": current.name, "deleted": True})


# --- who may change it, and where it is ----------------------------------------------------------------------


def may_change(request: web.Request, what: str) -> None:
    """403 unless the caller may change the registry (`what` says what it asked for)."""
    settings = request.app[STATE].settings
    if settings.auth_enable:
        caller = request.get(auth.CLIENT)
        if caller is None or not caller.policy.admin:
            raise Forbidden(f"only an admin key or policy may {what}")
    elif not settings.registry_write_enable:
        raise Forbidden(
            f"client auth is off, so anyone could {what}: turn AUTH_ENABLE on (admins may),"
            " or set REGISTRY_WRITE_ENABLE=true to let every caller"
        )


def _writable(request: web.Request) -> Registry:
    may_change(request, "change the provider registry")
    registry = request.app.get(REGISTRY)
    if registry is None:
        raise NotFound("the provider registry is kept in the usage store, which is off: set USAGE_STORE")
    if not registry.usage.ready:
        raise StoreUnavailable("the usage store is not open yet; try again shortly")
    return registry


async def _registrations(request: web.Request) -> tuple[Registration, ...]:
    usage = request.app.get(USAGE)
    if usage is None:
        return ()
    if not usage.ready:
        raise StoreUnavailable("the usage store is not open yet; try again shortly")
    async with reading():
        return await stored.registrations(usage.store)


async def _find(request: web.Request, wanted: str) -> Registration:
    """A registration by id, else by name (any case); 404 when none."""
    found = await _registrations(request)
    for registration in found:
        if registration.id == wanted:
            return registration
    for registration in found:
        if registration.name == wanted.lower():
            return registration
    raise NotFound(f"no provider {wanted[:64]!r}")


def _in_file(table: ProviderTable, name: str) -> Provider | None:
    provider = table.lookup(name)
    return provider if provider is not None and provider.id in table.entries else None


def _refuse_file_entry(table: ProviderTable, name: str) -> None:
    provider = _in_file(table, name)
    if provider is not None:
        raise Conflict(f"provider {provider.id!r} is declared in {table.source}: it is read-only here")


# --- the body ----------------------------------------------------------------------------------------------------


async def small_body(request: web.Request) -> bytes:
    """A small JSON body: bounded, timed, counted against the body budget while it is read."""
    held = request.app[BODY_BUDGET].hold()
    try:
        return await read_body(request, BODY_LIMIT, request.app[STATE].settings.read_timeout, held)
    finally:
        held.release()


_ATTRS = {
    "name": "name",
    "type": "type",
    "defaultModel": "default_model",
    "envVar": "env_var",
    "url": "url",
    "endpoints": "endpoints",
}


def json_object(raw: bytes) -> dict[str, Any]:
    """A small body (`small_body`) that must be one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    if type(body) is not dict:
        raise InvalidRequest("the body must be a JSON object")
    return body


def _fields(raw: bytes, *, partial: bool) -> dict[str, Any]:
    """The body's fields, each checked; values that could be secrets are never repeated in a message."""
    body = json_object(raw)
    for name in body:
        if name not in FIELDS and _SECRET_NAME.search(name):
            raise InvalidRequest(
                f"{name[:64]!r}: keys are never sent to or stored by the gateway;"
                " set envVar to the name of the environment variable that holds the key"
            )
    unknown = [name for name in body if name not in FIELDS]
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0][:64]!r}; a provider takes: {', '.join(FIELDS)}")
    if not partial:
        for name in ("name", "type"):
            if name not in body:
                raise InvalidRequest(f"{name} is required")
    for name in ("name", "type"):
        if name in body and not isinstance(body[name], str):
            raise InvalidRequest(f"{name} must be a string")
    if "name" in body and not _NAME.fullmatch(body["name"]):
        raise InvalidRequest("name must be lower case: a letter, then letters, digits, - or _ (at most 63)")
    if "type" in body and not _NAME.fullmatch(body["type"].lower()):
        raise InvalidRequest("type must name a provider of the providers file")
    env_var = body.get("envVar")
    if env_var is not None and not (isinstance(env_var, str) and _ENV_VAR.fullmatch(env_var)):
        raise InvalidRequest(
            "envVar must be the NAME of an environment variable (upper case letters, digits and _), never a key"
        )
    model = body.get("defaultModel")
    if model is not None and not (isinstance(model, str) and 0 < len(model) <= 256):
        raise InvalidRequest("defaultModel must be a model name (1 to 256 characters)")
    if body.get("url") is not None:
        _check_url(body["url"])
    endpoints = body.get("endpoints")
    if endpoints is not None and type(endpoints) is not dict:
        raise InvalidRequest("endpoints must be an object: operation -> {name, method, endpoint}")
    return body


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or len(url) > _MAX_TEXT:
        raise InvalidRequest("url must be a string")
    try:
        parsed = URL(url)
    except ValueError:
        raise InvalidRequest("url is not a URL") from None
    if parsed.raw_user or parsed.raw_password or parsed.query_string or "@" in parsed.raw_authority:
        raise InvalidRequest("url may not carry credentials (user info or a query): the key comes from envVar")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest("url must be an http:// or https:// URL with a host")


def _default_env(name: str) -> str:
    return f"{env_prefix(name)}_API_KEY"  # what a file entry without api_key_env reads


def _replaced(current: Registration, changed: dict[str, Any]) -> Registration:
    """`current` with the fields a PUT gave (null clears an optional one)."""
    if changed.get("endpoints", current.endpoints) is None:
        changed["endpoints"] = {}
    return dataclasses.replace(current, **changed, updated=time.time())


def _checked(state: GatewayState, registration: Registration) -> Registration:
    """The registration with its type as the file's id; 409 for a name of the file, 400 for what the table refuses
    (the same judgement the merge makes on every replica)."""
    _refuse_file_entry(state.file_table, registration.name)
    pid = kind(state.file_table, registration.type)
    if pid is None:
        kinds = ", ".join(sorted(state.file_table.entries))
        raise InvalidRequest(
            f"type {registration.type[:64]!r} is not a provider of {state.file_table.source}; one of: {kinds}"
        )
    registration = dataclasses.replace(registration, type=pid)
    _, problem = entry_of(state.file_table, registration)
    if problem is not None:
        raise InvalidRequest(f"provider {registration.name!r}: {problem}")
    return registration


# --- the answers -------------------------------------------------------------------------------------------------


def _answer(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=envelope.success(data), content_type=_JSON)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(provider: Provider | None) -> dict[str, Any]:
    return {
        "configured": provider is not None and provider.served,
        "problem": None if provider is None else provider.unavailable,
        "serves": [] if provider is None else sorted(provider.endpoints),
    }


def _registered(state: GatewayState, r: Registration) -> dict[str, Any]:
    provider = state.table.providers.get(r.name)
    shown: dict[str, Any] = {
        "id": r.id,
        "name": r.name,
        "type": r.type,
        "defaultModel": r.default_model,
        "envVar": r.env_var,
        "url": r.url,
        "endpoints": dict(r.endpoints),
        "source": "registry",
        "readOnly": False,
        **_status(provider),
        "created": _iso(r.created),
        "updated": _iso(r.updated),
    }
    if provider is None:
        shown["problem"] = state.registry_problems.get(r.name) or (
            "not in this replica's table yet (the registry is read every PROVIDERS_RELOAD_INTERVAL)"
        )
    return shown


def _file_entry(state: GatewayState, provider: Provider) -> dict[str, Any]:
    # The served table's entry, so a reload's change (a key set since) shows.
    current = state.table.providers.get(provider.id, provider)
    return {
        "id": current.id,
        "name": current.id,
        "type": current.id,
        "defaultModel": None,
        "envVar": current.key_env if current.auth_type != "none" else None,
        "url": current.url,
        "endpoints": {},
        "source": "file",
        "file": state.file_table.source,
        "readOnly": True,
        **_status(current),
        "created": None,
        "updated": None,
    }
