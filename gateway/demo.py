"""A tiny OpenAI-compatible upstream that streams canned answers, so `make run` works offline.

`python -m gateway.demo --port 8081` serves it; `--print-usage --gateway URL` prints lines to try the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

MODELS = ("demo-echo", "demo-story")
STORY = "Once upon a time, a gateway relayed every byte as it arrived, and nobody waited for anything."


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _answer(model: str, body: dict[str, Any]) -> str:
    if model == "demo-story":
        return STORY
    messages = body.get("messages") or [{}]
    last = messages[-1].get("content") if isinstance(messages[-1], dict) else ""
    return f"You said: {last if isinstance(last, str) else '[non-text content]'}"


def _usage(prompt: str, answer: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def models(request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "demo"} for m in MODELS]
    return web.json_response({"object": "list", "data": data})


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or body.get("model") not in MODELS:
        error = {"message": f"model must be one of {', '.join(MODELS)}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=404)
    model: str = body["model"]
    answer = _answer(model, body)
    usage = _usage(str(body.get("messages")), answer)
    created, cid = int(time.time()), _completion_id()
    if not body.get("stream"):
        message = {"role": "assistant", "content": answer}
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the listener went away: nothing to finish
        await _stream(response, cid, created, model, answer, usage, body)
    return response


async def _stream(
    response: web.StreamResponse,
    cid: str,
    created: int,
    model: str,
    answer: str,
    usage: dict[str, int],
    body: dict[str, Any],
) -> None:
    words = answer.split(" ")
    for i, word in enumerate(words):
        delta = {"content": word if i == 0 else f" {word}"}
        if i == 0:
            delta["role"] = "assistant"
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await asyncio.sleep(0.05)
    final = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
    if (body.get("stream_options") or {}).get("include_usage"):
        tail = {**final, "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()


def create_demo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


USAGE = """
Gateway on {gw} (demo upstream behind it, offline). Try:

  curl -s {gw}/v1/models
  curl -s {gw}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "demo/demo-echo", "messages": [{{"role": "user", "content": "hello"}}]}}'
  curl -sN {gw}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "demo-story", "stream": true, "messages": [{{"role": "user", "content": "a story"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{gw}/v1", api_key="unused"); \\
print(c.chat.completions.create(model="demo/demo-story", messages=[{{"role": "user", "content": "hi"}}]))'
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gateway.demo", description="offline demo upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--print-usage", action="store_true", help="print how to try the gateway and exit")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    args = parser.parse_args(argv)
    if args.print_usage:
        print(USAGE.format(gw=args.gateway))
        return
    web.run_app(create_demo_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
