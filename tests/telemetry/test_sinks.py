"""The sinks of the request record: after each request, every sink gets the finished Exchange once, in order;
one that fails is logged and changes neither the answer nor the sinks after it."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from gateway.api.errors import error_renderer
from gateway.exchange import EXCHANGE, Exchange
from gateway.telemetry.observe import observer


async def test_every_sink_gets_each_finished_request_once_even_after_one_fails(aiohttp_client: Any) -> None:
    seen: list[tuple[str, str, str, int, str | None]] = []

    def broken(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        raise RuntimeError("a sink that fails")

    def recording(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        assert ended >= exchange.started
        seen.append((request.method, exchange.route, exchange.operation, status, exchange.provider))

    async def chat(request: web.Request) -> web.Response:
        request[EXCHANGE].provider = "fake"
        return web.json_response({"ok": True})

    app = web.Application(
        middlewares=[observer({"/v1/chat/completions": "chat"}, [broken, recording]), error_renderer({})]
    )
    app.router.add_post("/v1/chat/completions", chat)
    client = await aiohttp_client(app)
    with structlog.testing.capture_logs() as logs:
        ok = await client.post("/v1/chat/completions", json={})
        missing = await client.get("/nowhere")
        for _ in range(100):  # sinks run once the answer is out, on the next turns of the loop
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
    assert (ok.status, await ok.json(), missing.status) == (200, {"ok": True}, 404)
    assert seen == [
        ("POST", "/v1/chat/completions", "chat", 200, "fake"),
        ("GET", "unmatched", "other", 404, None),
    ]
    failures = [line for line in logs if line["event"] == "recording the request failed"]
    assert len(failures) == 2 and all("broken" in line["sink"] for line in failures)
