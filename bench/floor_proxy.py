"""The framework's floor: the least an aiohttp server + aiohttp client relay can do per request (no routing,
no checks, no header policy), with the gateway's own session settings. The gateway's cost above this is ours.

    python -m bench.floor_proxy PORT UPSTREAM_URL [--lowlevel]

`--lowlevel` serves the same relay from aiohttp's low-level server (`web.Server`: no Application, router or
middleware chain), to measure what those cost per request (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import gc
import sys

import aiohttp
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    return await forward(request, request.app[SESSION], request.app[UPSTREAM])


async def forward(request: web.BaseRequest, session: aiohttp.ClientSession, upstream: str) -> web.StreamResponse:
    body = await request.read()
    headers = {"Content-Type": "application/json", "X-Bench": request.headers.get("X-Bench", "")}
    async with await session.request("POST", upstream, headers=headers, data=body) as up:
        response = web.StreamResponse(status=up.status)
        response.content_type = up.content_type
        if up.content_length is not None:
            response.content_length = up.content_length
        await response.prepare(request)
        async for chunk in up.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(port: int, upstream: str, lowlevel: bool) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
    )
    app.router.add_post("/v1/chat/completions", relay)
    runner: web.BaseRunner
    if lowlevel:
        session = app[SESSION]

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await forward(request, session, upstream)

        runner = web.ServerRunner(web.Server(handle, handler_cancellation=True, access_log=None))
    else:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    gc.freeze()  # the gateway's own runtime settings (gateway/server.py), so the comparison is of code only
    gc.set_threshold(10_000, 10, 10)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await app[SESSION].close()
        await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2], "--lowlevel" in sys.argv[3:]))
