"""A fake provider whose models call tools, for the MCP chat loop: OpenAI-compatible at /v1/chat/completions,
scripted by model name, whole or streamed. Each turn reads the conversation it is sent: while it holds fewer tool
results than the script wants, the model calls tools (when they are offered); then it answers with what it saw:

    "results: <each tool message's content, joined by ' | '>"

Scripts (by model name):

- `adder`: calls `files__add` {"a": 2, "b": 3} once.
- `pair`: calls `files__add` and `files__echo` in one turn.
- `failing`: calls `files__fail`.
- `sleepy`: calls `files__slow` {"seconds": 5}.
- `bad-args`: calls `files__add` with arguments that are not JSON.
- `forever`: calls `files__echo` every turn it is offered it, and answers when it is not.
- `stubborn`: calls `files__echo` every turn, offered or not.
- `mixed`: calls `files__add` and the client's `get_weather` in one turn.
- `client`: calls only the client's `get_weather`.
- `chatty`: answers at once, calling nothing.
- `refused`: the provider refuses it (400, REFUSAL).
- `leaky`: the provider refuses it (400), echoing the URL it was called at (query and all) in the message.

`fail` maps a request's number (0: the first this provider gets) to a status it answers instead (503, 429: a
group's deployment failing before its first byte). With `compress`, answers are gzipped when the request accepts it.

A streamed turn that calls tools first says "Let me look. ", then sends each call in pieces (name, then the
arguments in two halves), the `tool_calls` finish, a usage chunk when asked, and [DONE]. Every turn reports USAGE.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.bodies import DONE
from tests.fakes.providers import FakeProvider

REFUSAL = {"error": {"message": "the context is too long", "type": "invalid_request_error", "code": None}}
USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather", "parameters": {"type": "object"}},
}
_SCRIPTS: dict[str, list[tuple[str, str]]] = {
    "adder": [("files__add", '{"a": 2, "b": 3}')],
    "pair": [("files__add", '{"a": 1, "b": 1}'), ("files__echo", '{"text": "hi"}')],
    "failing": [("files__fail", '{"reason": "no disk"}')],
    "sleepy": [("files__slow", '{"seconds": 5}')],
    "bad-args": [("files__add", "{not json")],
    "forever": [("files__echo", '{"text": "again"}')],
    "stubborn": [("files__echo", '{"text": "again"}')],
    "mixed": [("files__add", '{"a": 2, "b": 3}'), ("get_weather", '{"city": "Oslo"}')],
    "client": [("get_weather", '{"city": "Oslo"}')],
    "chatty": [],
}


def offered(body: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in body.get("tools") or []}


def results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m.get("role") == "tool"]


@dataclass(kw_only=True)
class ToolModel(FakeProvider):
    """The provider; `requests` keeps every turn's request as it arrived. `held` (an Event) holds the first
    streamed answer after its first words until set."""

    held: asyncio.Event | None = None
    fail: dict[int, int] = field(default_factory=dict)
    compress: bool = False

    def __post_init__(self) -> None:
        self.routes = {"/v1/chat/completions": self.chat}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        status = self.fail.get(len(self.requests) - 1)
        if status is not None:
            return web.json_response({"error": {"message": "overloaded"}}, status=status)
        body = orjson.loads(await request.read())
        if body["model"] == "refused":
            return web.json_response(REFUSAL, status=400)
        if body["model"] == "leaky":
            return web.json_response(
                {"error": {"message": f"bad URL http://{request.host}{request.raw_path}"}}, status=400
            )
        script = _SCRIPTS[body["model"]]
        seen = results(body)
        names = offered(body)
        calls = [(n, a) for n, a in script if n in names or body["model"] == "stubborn"]
        if body["model"] == "stubborn":
            done = False
        elif body["model"] == "forever":
            done = "files__echo" not in names
        else:
            done = not calls or len(seen) >= len([n for n, _ in script if n.startswith("files__")]) > 0
        if body["model"] == "client" and seen:
            done = True
        if done:
            calls = []
        text = f"results: {' | '.join(seen)}"
        usage_asked = bool((body.get("stream_options") or {}).get("include_usage"))
        turn = len([m for m in body["messages"] if m.get("role") == "assistant"])
        if not body.get("stream"):
            answer = web.json_response(self._whole(body["model"], turn, calls, text), headers={"x-request-id": "up-1"})
            if self.compress:
                answer.enable_compression()
            return answer
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-request-id": "up-1"})
        if self.compress:
            response.enable_compression()
        await response.prepare(request)
        for part in self._stream(body["model"], turn, calls, text, usage_asked):
            await response.write(part)
            if self.held is not None and not calls and b"results" in part:
                await self.held.wait()
        await response.write_eof()
        return response

    def _whole(self, model: str, turn: int, calls: list[tuple[str, str]], text: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else text}
        if calls:
            message["tool_calls"] = [
                {"id": f"call_{turn}_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(calls)
            ]
        finish = "tool_calls" if calls else "stop"
        return {
            "id": f"chatcmpl-{turn}",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": USAGE,
        }

    def _stream(self, model: str, turn: int, calls: list[tuple[str, str]], text: str, usage: bool) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": f"chatcmpl-{turn}",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(event) + b"\n\n"

        parts = [chunk({"role": "assistant", "content": ""})]
        if calls:
            parts.append(chunk({"content": "Let me look. "}))
            for i, (name, arguments) in enumerate(calls):
                head = {"index": i, "id": f"call_{turn}_{i}", "type": "function"}
                parts.append(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    parts.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
            parts.append(chunk({}, "tool_calls"))
        else:
            for word in text.split(" "):
                parts.append(chunk({"content": word + " "}))
            parts.append(chunk({}, "stop"))
        if usage:
            tail = {"id": f"chatcmpl-{turn}", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
            parts.append(b"data: " + orjson.dumps(tail) + b"\n\n")
        parts.append(DONE)
        return parts
