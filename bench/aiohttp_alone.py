"""The framework's ceiling: an aiohttp server that answers the plain scenario itself (the mock's bytes, no
upstream call), with the gateway's runtime settings. No aiohttp-based gateway can serve plain requests faster.

    python -m bench.aiohttp_alone PORT
"""

from __future__ import annotations

import asyncio
import gc
import sys

import uvloop
from aiohttp import web

# The mock upstream's plain answer (bench/mock_upstream.js), byte for byte.
PLAIN = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}'
)


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=PLAIN, content_type="application/json")


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    gc.freeze()  # as gateway/server.py does
    gc.set_threshold(10_000, 10, 10)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
