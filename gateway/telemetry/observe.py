"""The observing middleware, outermost: gives each request its record (Exchange) and its id (response, upstream,
every log line), keeps it in the set of live requests, and when it ends reads its Exchange once to record metrics
and write the access line.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config.settings import Settings
from gateway.errors import Handler
from gateway.exchange import EXCHANGE, Exchange
from gateway.telemetry import access_log
from gateway.telemetry.metrics import GatewayMetrics, method_label, route_label

log = structlog.get_logger("gateway.observe")

REQUEST_ID = "X-Request-ID"
# A client's id is kept when it is short and plain; anything else could forge or flood log lines.
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
ROUTE_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/models": "models", "/proxy/{provider}/{path}": "proxy"}
# nginx's code for "the client closed the connection before the answer started".
CLIENT_CLOSED = 499


def request_id(header: str | None, new_id: Callable[[], str] = lambda: os.urandom(16).hex()) -> str:
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return new_id()


def id_maker() -> Callable[[], str]:
    """128 random bits as 32 hex digits, like uuid4().hex. An id needs to be unique, not unpredictable: a generator
    seeded once from the OS avoids a system call per request."""
    bits = random.Random(os.urandom(32)).getrandbits
    return lambda: f"{bits(128):032x}"


def observer(settings: Settings, metrics: GatewayMetrics | None) -> Middleware:
    """The middleware, with its choices made once: metrics on or off, bodies logged or not."""
    bodies = settings.environment == "development"
    words, max_messages = settings.debug_content_truncate_words, settings.debug_max_messages
    live = metrics.live if metrics is not None else None
    new_id = id_maker()
    # The app's event loop, asked once (asyncio.get_running_loop() is a getpid() system call on Python 3.11).
    loops: list[asyncio.AbstractEventLoop] = []

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[EXCHANGE] = exchange = Exchange()
        route = route_label(request)
        # Known from the route already, so a request refused before its handler (401) still counts as chat.
        exchange.operation = ROUTE_OPERATIONS.get(route, exchange.operation)
        exchange.request_id = rid = request_id(request.headers.get(REQUEST_ID), new_id)
        # Never reset: aiohttp runs each request in a task of its own, whose context ends with it.
        structlog.contextvars.bind_contextvars(request_id=rid)
        if live is not None:
            live[id(exchange)] = exchange
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID] = rid
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID] = rid
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            exchange.client_disconnected = True
            raise
        finally:
            ended = time.perf_counter()
            if live is not None:
                live.pop(id(exchange), None)
            # Like nginx's log phase, after the answer is out: a whole answer returned from here is written by
            # aiohttp once this returns, so recording now would delay it. The callback keeps this context (the
            # request id) and runs as soon as the handler task yields.
            if not loops:
                loops.append(asyncio.get_running_loop())
            loops[0].call_soon(record, request, exchange, route, status, ended)

    def record(request: web.Request, exchange: Exchange, route: str, status: int, ended: float) -> None:
        try:
            if metrics is not None:
                metrics.record(exchange, route, method_label(request.method), status, ended)
            if bodies:
                access_log.write_bodies(exchange, words, max_messages)
            access_log.write(request, exchange, route, status, ended)
        except Exception:
            # Observing must never change the answer the client gets.
            log.exception("recording the request failed")

    return observe
