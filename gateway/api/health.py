"""Probes: liveness (`/health`) and readiness (`/ready`, 503 while draining)."""

from __future__ import annotations

from aiohttp import web

from gateway.runtime.state import STATE

_JSON = "application/json"


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"message":"OK"}', content_type=_JSON)


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.Response(status=503, body=b'{"status":"draining"}', content_type=_JSON)
    return web.Response(body=b'{"status":"ready"}', content_type=_JSON)
