"""The observing middleware, outermost: gives each request its record (Exchange) and its id (response, upstream,
every log line), keeps it in the set of live requests, and when it ends hands the record to each sink once
(metrics, the access line, the token charge, ...).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import Handler
from gateway.exchange import EXCHANGE, Exchange, Sink

log = structlog.get_logger("gateway.observe")

REQUEST_ID = "X-Request-ID"
# A client's id is kept when it is short and plain; anything else could forge or flood log lines.
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
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


def observer(
    operations: Mapping[str, str], sinks: Sequence[Sink], live: dict[int, Exchange] | None = None
) -> Middleware:
    """The middleware. `operations`: the route table's operation per route pattern; `sinks`: what reads each
    finished record, in order; `live`, when given, holds the records of the requests in flight (for gauges)."""
    new_id = id_maker()
    sinks = tuple(sinks)
    # The app's event loop, asked once (see docs/performance.md).
    loops: list[asyncio.AbstractEventLoop] = []

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[EXCHANGE] = exchange = Exchange()
        resource = request.match_info.route.resource
        if resource is not None:
            exchange.route = route = resource.canonical
            # Known from the route already, so a request refused before its handler (401) still counts as chat.
            exchange.operation = operations.get(route, exchange.operation)
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
            loops[0].call_soon(record, request, exchange, status, ended)

    def record(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        for sink in sinks:
            try:
                sink(request, exchange, status, ended)
            except Exception:
                # Observing must never change the answer the client gets, nor one sink's failure another's work.
                log.exception("recording the request failed", sink=getattr(sink, "__qualname__", repr(sink)))

    return observe
