"""OpenAI's Responses API. Creating a response is a model route like chat; the response then lives at the provider
that made it, so the gateway remembers which one answered (`runtime/responses.py`) and sends there the follow-ups
on its id (retrieve, delete, input items, cancel) and a new request that continues it (`previous_response_id`).
An id is checked against the client that made it; `?provider=` names the provider of an id the gateway does not
know (made elsewhere, or forgotten).
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.access import auth
from gateway.api.inbound import Held, holding_body, read_body
from gateway.dialects.openai import ModelRequest
from gateway.errors import Handler, ResponseNotFound
from gateway.exchange import EXCHANGE, Exchange
from gateway.routing import resolve
from gateway.runtime.responses import Owner
from gateway.runtime.state import STATE
from gateway.telemetry.scanners import JsonUsage, ResponsesSseUsage
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.transport import UpstreamRequest

# The provider's endpoint name in the table: creating a response, and under its URL every follow-up.
ENDPOINT = "responses"
# What an id may be to go into a provider URL: OpenAI's are `resp_` and hex; no dots, slashes or escapes.
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _owned(request: web.Request, owner: Owner) -> bool:
    return owner.client == request[EXCHANGE].client_name


def pin(request: web.Request, parsed: ModelRequest) -> str | None:
    """The provider that made the response a new request continues, when the gateway knows it; 404 when it is
    another client's. An id the gateway does not know routes by the model, and the provider answers for it."""
    previous = parsed.body.get("previous_response_id")
    if not isinstance(previous, str):
        return None
    owner = request.app[STATE].responses.owner(previous)
    if owner is None:
        return None
    if not _owned(request, owner):
        raise ResponseNotFound(f"previous response {previous!r} not found", code="previous_response_not_found")
    return owner.provider


def answered(request: web.Request, exchange: Exchange) -> None:
    """Remember which provider made the response just relayed (unless the client asked it not to be stored)."""
    status = exchange.upstream_status
    if status is None or not 200 <= status < 300 or exchange.provider is None:
        return
    if exchange.request_body is not None and exchange.request_body.get("store") is False:
        return
    scanner = exchange.scanner
    response_id: object = None
    if isinstance(scanner, ResponsesSseUsage):
        response_id = scanner.response_id
    elif isinstance(scanner, JsonUsage) and scanner.body is not None:
        response_id = scanner.body.get("id")
    if isinstance(response_id, str) and RESPONSE_ID.fullmatch(response_id):
        request.app[STATE].responses.remember(response_id, exchange.provider, exchange.client_name)


def followup(tail: str = "") -> Handler:
    """The handler of `/v1/responses/{response_id}{tail}`: the same method and tail under the provider's endpoint."""

    async def serve(request: web.Request, held: Held) -> web.StreamResponse:
        state = request.app[STATE]
        settings, table, policies = state.settings, state.table, state.policies
        exchange = request[EXCHANGE]
        response_id = request.match_info["response_id"]
        if not RESPONSE_ID.fullmatch(response_id):
            raise ResponseNotFound(f"no response has the id {response_id[:80]!r}")
        owner = state.responses.owner(response_id)
        if owner is not None and not _owned(request, owner):
            owner = None
            named = None  # another client's response: not this client's to reach, whatever it names
        else:
            named = request.query.get("provider")
        name = named or (owner.provider if owner is not None else None)
        if name is None:
            raise ResponseNotFound(
                f"response {response_id!r} is unknown to this gateway (not made through it, or forgotten); "
                "name the provider that made it with ?provider="
            )
        provider = resolve.named(table, name)
        exchange.provider = provider.id
        auth.check_provider(request, provider.id)
        resolve.require_served(provider)
        endpoint = resolve.endpoint(provider, ENDPOINT)
        url = outbound.followup_url(provider, endpoint.url, response_id + tail, request.query.items())
        body = await read_body(request, settings.max_request_body_size, settings.read_timeout, held)
        exchange.bytes_in = len(body)
        # A background response is streamed again with ?stream=true.
        exchange.stream = stream = request.query.get("stream") == "true"
        headers = outbound.upstream_headers(
            request.raw_headers,
            provider,
            disable_compression=settings.disable_compression,
            request_id=exchange.request_id,
            inference=True,
        )
        rules = policies[provider.id]
        sent = body if body or request.method == "POST" else None
        response = await call.relay(
            request,
            request.app[call.TRANSPORT],
            UpstreamRequest(request.method, url, headers, sent),
            rules.limits(stream),
            exchange,
            rules.retry,
            settings.write_timeout,
            secret=query_secret(provider),
        )
        if request.method == "DELETE" and 200 <= (exchange.upstream_status or 0) < 300:
            state.responses.forget(response_id)
        return response

    return holding_body(serve)
