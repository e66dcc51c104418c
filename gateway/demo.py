"""A tiny upstream that streams canned answers, so `make run` works offline: OpenAI's API (chat, the Responses API
with its follow-ups, embeddings, ...) and Anthropic's Messages API.

`python -m gateway.demo --port 8081` serves it; `--print-usage --gateway URL` prints lines to try the gateway
(`--wait S --pid P`: once URL/health answers, within S seconds, while process P lives); `--check-free
NAME=HOST:PORT ...` says in one line which `make run` variable to change when an address is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import hashlib
import math
import os
import socket
import struct
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

MODELS = ("demo-echo", "demo-story")  # the chat models
# Every model the demo lists: the chat models and one per other endpoint (the table says what each is).
LISTED = (*MODELS, "demo-embed", "demo-image", "demo-tts", "demo-whisper", "demo-mod", "demo-rerank")
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
    data = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "demo"} for m in LISTED]
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


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _vector(text: str, size: int = 8) -> list[float]:
    """A deterministic embedding: the same text always gives the same unit-free vector."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i] - 128) / 128, 4) for i in range(size)]


async def embeddings(request: web.Request) -> web.Response:
    body = await _json_body(request)
    inputs = body.get("input", "")
    texts = inputs if isinstance(inputs, list) else [inputs]
    data = [{"object": "embedding", "index": i, "embedding": _vector(str(t))} for i, t in enumerate(texts)]
    tokens = sum(len(str(t).split()) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return web.json_response({"object": "list", "data": data, "model": body.get("model"), "usage": usage})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    prompt = str(body.get("prompt", ""))
    text = STORY if body.get("model") == "demo-story" else f" You wrote: {prompt}"
    base = {"id": _completion_id().replace("chatcmpl", "cmpl"), "object": "text_completion", "created": 1}
    base["model"] = body.get("model")
    if not body.get("stream"):
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
        return web.json_response({**base, "choices": [choice], "usage": _usage(prompt, text)})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in text.split(" "):
        choice = {"text": word + " ", "index": 0, "logprobs": None, "finish_reason": None}
        await response.write(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        await response.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(prompt, text)}) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def moderations(request: web.Request) -> web.Response:
    body = await _json_body(request)
    result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.0}}
    return web.json_response({"id": "modr-demo", "model": body.get("model"), "results": [result]})


# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


async def images(request: web.Request) -> web.Response:
    return web.json_response({"created": 1735689600, "data": [{"b64_json": base64.b64encode(PNG).decode()}]})


def _wav(seconds: float = 0.25, rate: int = 8000) -> bytes:
    """A short 440 Hz tone as a WAV file."""
    frames = int(seconds * rate)
    samples = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate))) for n in range(frames))
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(samples))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    )
    return header + b"data" + struct.pack("<I", len(samples)) + samples


async def speech(request: web.Request) -> web.StreamResponse:
    audio = _wav()
    response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
    response.content_length = len(audio)
    await response.prepare(request)
    for start in range(0, len(audio), 1024):
        await response.write(audio[start : start + 1024])
    await response.write_eof()
    return response


async def _form(request: web.Request) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """A multipart upload's text fields, and each file's name and size (read as it comes, not kept)."""
    fields: dict[str, str] = {}
    files: list[tuple[str, int]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.filename is None:
            fields[part.name or ""] = (await part.read(decode=True)).decode("utf-8", "replace")
            continue
        size = 0
        while chunk := await part.read_chunk():
            size += len(chunk)
        files.append((part.filename, size))
    return fields, files


async def image_upload(request: web.Request) -> web.Response:
    """Image edits and variations: the demo's PNG, whatever was sent."""
    await _form(request)
    return web.json_response({"created": 1735689600, "data": [{"b64_json": base64.b64encode(PNG).decode()}]})


async def transcribe(request: web.Request) -> web.StreamResponse:
    """Transcriptions and translations: an echo of what was uploaded, in the asked response_format (or streamed)."""
    fields, files = await _form(request)
    name, size = files[0] if files else ("nothing", 0)
    text = f"heard {size} bytes of {name}"
    if fields.get("stream") == "true":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = text.split(" ")
        for i, word in enumerate(words):
            delta = {"type": "transcript.text.delta", "delta": word if i == 0 else " " + word}
            await response.write(b"data: " + orjson.dumps(delta) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({"type": "transcript.text.done", "text": text}) + b"\n\n")
        await response.write_eof()
        return response
    shape = fields.get("response_format", "json")
    if shape == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if shape == "srt":
        return web.Response(text=f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n", content_type="text/plain")
    if shape == "vtt":
        return web.Response(text=f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n", content_type="text/plain")
    if shape == "verbose_json":
        segment = {"id": 0, "start": 0.0, "end": 1.0, "text": text}
        return web.json_response({"task": "transcribe", "language": "english", "duration": 1.0, "text": text,
                                  "segments": [segment]})  # fmt: skip
    return web.json_response({"text": text})


async def rerank(request: web.Request) -> web.Response:
    body = await _json_body(request)
    query = set(str(body.get("query", "")).lower().split())
    documents = body.get("documents") or []
    scored = [
        {"index": i, "relevance_score": round(len(query & set(str(d).lower().split())) / (len(query) or 1), 4)}
        for i, d in enumerate(documents)
    ]
    return web.json_response({"results": sorted(scored, key=lambda r: -r["relevance_score"])})


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts (either API's shapes)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _reply(model: Any, said: str) -> str:
    return STORY if model == "demo-story" else f"You said: {said}"


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# Anthropic's Messages API.


def _anthropic_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": type_, "message": message}}, status=status)


async def messages(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    model = body.get("model")
    if model not in MODELS:
        return _anthropic_error(404, "not_found_error", f"model must be one of {', '.join(MODELS)}")
    turns = body.get("messages") or [{}]
    said = _text_of(turns[-1].get("content")) if isinstance(turns[-1], dict) else ""
    text = _reply(model, said)
    usage = {"input_tokens": len(said.split()) or 1, "output_tokens": len(text.split())}
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return web.json_response(message)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    with contextlib.suppress(ConnectionResetError):
        await response.write(_sse("message_start", {"type": "message_start", "message": start}))
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        await response.write(_sse("content_block_start", block))
        for i, word in enumerate(text.split(" ")):
            delta = {"type": "text_delta", "text": word if i == 0 else f" {word}"}
            await response.write(
                _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
            await asyncio.sleep(0.05)
        await response.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        end = {"stop_reason": "end_turn", "stop_sequence": None}
        tail = {"type": "message_delta", "delta": end, "usage": {"output_tokens": usage["output_tokens"]}}
        await response.write(_sse("message_delta", tail))
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
    return response


async def count_tokens(request: web.Request) -> web.Response:
    body = await _json_body(request)
    turns = body.get("messages") or []
    words = sum(len(_text_of(t.get("content")).split()) for t in turns if isinstance(t, dict))
    return web.json_response({"input_tokens": words})


# OpenAI's Responses API: the demo keeps its last few responses so that the follow-ups have something to find.

RESPONSES = web.AppKey("demo_responses", dict[str, tuple[dict[str, Any], list[dict[str, Any]]]])
KEPT_RESPONSES = 100


def _openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return web.json_response({"error": error}, status=status)


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for n, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, dict):
            content = item.get("content")
            parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
            items.append({"id": f"msg_in{n}", "type": "message", "status": "completed", **item, "content": parts})
    return items


async def responses_create(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    model = body.get("model")
    if model not in MODELS:
        return _openai_error(404, f"model must be one of {', '.join(MODELS)}", "model_not_found")
    previous = body.get("previous_response_id")
    kept = request.app[RESPONSES]
    if previous is not None and previous not in kept:
        return _openai_error(404, f"Previous response with id '{previous}' not found.", "previous_response_not_found")
    items = _input_items(body.get("input"))
    said = _text_of(items[-1].get("content")) if items else ""
    text = _reply(model, said)
    rid, mid = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex[:24]}"
    inputs, outputs = len(said.split()) or 1, len(text.split())
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": mid, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    usage = {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }
    done: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [item],
        "previous_response_id": previous,
        "store": body.get("store", True),
        "usage": usage,
    }
    if done["store"] is not False:
        if len(kept) >= KEPT_RESPONSES:
            del kept[next(iter(kept))]
        kept[rid] = (done, items)
    if not body.get("stream"):
        return web.json_response(done)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    opened = {**item, "status": "in_progress", "content": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": opened},
        {"type": "response.content_part.added", "item_id": mid, "output_index": 0, "content_index": 0,
         "part": {**part, "text": ""}},
    ]  # fmt: skip
    with contextlib.suppress(ConnectionResetError):
        sequence = 0
        for event in events:
            await response.write(_sse(event["type"], {**event, "sequence_number": sequence}))
            sequence += 1
        for i, word in enumerate(text.split(" ")):
            delta = {"type": "response.output_text.delta", "item_id": mid, "output_index": 0, "content_index": 0,
                     "delta": word if i == 0 else f" {word}", "sequence_number": sequence}  # fmt: skip
            await response.write(_sse("response.output_text.delta", delta))
            sequence += 1
            await asyncio.sleep(0.05)
        closing: list[dict[str, Any]] = [
            {"type": "response.output_text.done", "item_id": mid, "output_index": 0, "content_index": 0, "text": text},
            {"type": "response.content_part.done", "item_id": mid, "output_index": 0, "content_index": 0, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": done},
        ]
        for event in closing:
            await response.write(_sse(event["type"], {**event, "sequence_number": sequence}))
            sequence += 1
        await response.write_eof()
    return response


def _kept(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    return request.app[RESPONSES].get(request.match_info["response_id"])


def _missing(request: web.Request) -> web.Response:
    return _openai_error(404, f"Response with id '{request.match_info['response_id']}' not found.")


async def responses_get(request: web.Request) -> web.Response:
    found = _kept(request)
    return _missing(request) if found is None else web.json_response(found[0])


async def responses_delete(request: web.Request) -> web.Response:
    found = request.app[RESPONSES].pop(request.match_info["response_id"], None)
    if found is None:
        return _missing(request)
    return web.json_response({"id": found[0]["id"], "object": "response", "deleted": True})


async def responses_input_items(request: web.Request) -> web.Response:
    found = _kept(request)
    if found is None:
        return _missing(request)
    items = found[1]
    first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
    return web.json_response({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False})


async def responses_cancel(request: web.Request) -> web.Response:
    if _kept(request) is None:
        return _missing(request)
    return _openai_error(400, "Only responses created with background=true can be cancelled.")


def create_demo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/images/generations", images)
    app.router.add_post("/v1/images/edits", image_upload)
    app.router.add_post("/v1/images/variations", image_upload)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/audio/transcriptions", transcribe)
    app.router.add_post("/v1/audio/translations", transcribe)
    app.router.add_post("/v1/rerank", rerank)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app[RESPONSES] = {}
    app.router.add_post("/v1/responses", responses_create)
    app.router.add_get("/v1/responses/{response_id}", responses_get)
    app.router.add_delete("/v1/responses/{response_id}", responses_delete)
    app.router.add_get("/v1/responses/{response_id}/input_items", responses_input_items)
    app.router.add_post("/v1/responses/{response_id}/cancel", responses_cancel)
    return app


USAGE = """
Gateway on {gw} (demo upstream behind it, offline). Try:

  curl -s {gw}/v1/models
  curl -s '{gw}/v1/models?service_type=stt'
  curl -s {gw}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "demo/demo-echo", "messages": [{{"role": "user", "content": "hello"}}]}}'
  curl -sN {gw}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "demo-story", "stream": true, "messages": [{{"role": "user", "content": "a story"}}]}}'
  curl -s {gw}/v1/embeddings -H 'Content-Type: application/json' -d '{{"model": "demo-embed", "input": "hello"}}'
  curl -s {gw}/v1/audio/speech -H 'Content-Type: application/json' \\
       -d '{{"model": "demo-tts", "voice": "alloy", "input": "hello"}}' -o hello.wav
  curl -s {gw}/v1/audio/transcriptions -F model=demo/demo-whisper -F file=@hello.wav -F response_format=srt
  curl -s {gw}/v1/audio/translations -F model=demo-whisper -F file=@hello.wav
  curl -s {gw}/v1/images/edits -F model=demo-image -F image=@hello.wav -F prompt='add a hat'
  curl -sN {gw}/v1/responses -H 'Content-Type: application/json' \\
       -d '{{"model": "demo-story", "input": "a story", "stream": true}}'
  curl -s {gw}/v1/responses/RESP_ID         # an id from above: the gateway sends it where it was made
  curl -sN {gw}/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \\
       -d '{{"model":"demo-story", "max_tokens": 99, "stream": true, "messages": [{{"role": "user", "content": "a"}}]}}'
  curl -s {gw}/v1/messages/count_tokens -H 'Content-Type: application/json' \\
       -d '{{"model": "demo-echo", "messages": [{{"role": "user", "content": "how many tokens"}}]}}'
{metrics}
  curl -s '{gw}/v1/usage?group_by=model'      # usage so far; the page: {gw}/usage
  {python} -c 'from openai import OpenAI
c = OpenAI(base_url="{gw}/v1", api_key="unused")
answer = c.chat.completions.create(model="demo/demo-story", messages=[{{"role": "user", "content": "hi"}}])
print(answer.choices[0].message.content)'
"""
METRICS_USAGE = "  curl -s {metrics} | grep gen_ai_      # Prometheus metrics\n"


def _python() -> str:
    """This interpreter (the venv's, which has `openai`), relative when it is under the working directory."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def usage(gateway: str, metrics: str | None = None) -> str:
    lines = METRICS_USAGE.format(metrics=metrics) if metrics else ""
    return USAGE.format(gw=gateway, python=_python(), metrics=lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process, but there
        pass
    return True


def wait_healthy(gateway: str, limit: float, pid: int | None = None) -> bool:
    """Whether `gateway`/health answers 200 within `limit` seconds; False at once when process `pid` ends (the
    gateway has said why it stopped)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            return False
        try:
            with urllib.request.urlopen(f"{gateway}/health", timeout=1) as response:
                if response.status == 200:
                    return pid is None or _alive(pid)
        except OSError:  # not listening yet (URLError), or not answering yet
            pass
        time.sleep(0.1)
    return False


def _listen_problem(exc: OSError, host: str, port: int, variable: str) -> str:
    """One line: the address, why it cannot be listened on, and the `make run` variable to change."""
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or type(exc).__name__
    fix = (
        f"pick another port: make run {variable}=N"
        if exc.errno in (errno.EADDRINUSE, errno.EACCES)
        else "check the address: make run HOST=..."
    )
    return f"cannot listen on {host}:{port} ({reason}); {fix}"


def check_free(addresses: Sequence[str]) -> str | None:
    """The first of `NAME=HOST:PORT` that cannot be bound, as one line; None when all can. Bound as aiohttp binds
    (SO_REUSEADDR), so a port left in TIME_WAIT counts as free."""
    for spec in addresses:
        variable, _, address = spec.partition("=")
        host, _, port = address.rpartition(":")
        try:
            info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
            with socket.socket(info[0], socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(info[4])
                sock.listen()
        except OSError as exc:
            return _listen_problem(exc, host, int(port), variable)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway.demo", description="offline demo upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--print-usage", action="store_true", help="print how to try the gateway and exit")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--metrics", help="the gateway's /metrics URL, for --print-usage")
    parser.add_argument("--wait", type=float, help="print the usage once the gateway's /health answers, within this")
    parser.add_argument("--pid", type=int, help="with --wait: the gateway's process; print nothing once it ends")
    parser.add_argument("--check-free", nargs="+", metavar="NAME=HOST:PORT", help="exit 2 if one cannot be bound")
    args = parser.parse_args(argv)
    if args.check_free:
        problem = check_free(args.check_free)
        if problem:
            print(f"make run: {problem}", file=sys.stderr)
            return 2
        return 0
    if args.print_usage:
        if args.wait is not None and not wait_healthy(args.gateway, args.wait, args.pid):
            if args.pid is None or _alive(args.pid):
                print(f"gateway.demo: {args.gateway}/health did not answer within {args.wait:g}s", file=sys.stderr)
            return 1
        print(usage(args.gateway, args.metrics), flush=True)
        return 0
    try:
        web.run_app(create_demo_app(), host=args.host, port=args.port, print=None)
    except OSError as exc:  # one line, not a traceback
        print(f"gateway.demo: {_listen_problem(exc, args.host, args.port, 'DEMO_PORT')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
