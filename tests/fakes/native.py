"""Fake providers of the two APIs the gateway relays natively: Anthropic's Messages API (`AnthropicProvider`) and
OpenAI's Responses API with its follow-ups (`ResponsesProvider`). Both answer with fixed bytes (exact comparisons
at the client) and hold a stream after its first event when asked (`held` model), until `release` is set."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.providers import FakeProvider


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --- Anthropic's Messages API --------------------------------------------------------------------------------

# Anthropic counts cache writes and reads apart from input_tokens: the gateway counts 12 + 2 + 3 = 17 in, 6 out.
MESSAGE_USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 6}
MESSAGE = orjson.dumps(
    {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": "Hello from the fake"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": MESSAGE_USAGE,
    }
)
# A stream whose message_start says 5 in (1 out so far) and whose message_delta ends at 4 out (cumulative).
MESSAGE_START = sse(
    "message_start",
    {
        "type": "message_start",
        "message": {"id": "msg_fake2", "type": "message", "role": "assistant", "model": "claude-fake", "content": [],
                    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}},
    },
)  # fmt: skip
MESSAGE_REST = [
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
    sse("ping", {"type": "ping"}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "Hello"}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": " stream"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": 4}}),
    sse("message_stop", {"type": "message_stop"}),
]  # fmt: skip
MESSAGE_STREAM = MESSAGE_START + b"".join(MESSAGE_REST)
COUNT = b'{"input_tokens":9}'
OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'


@dataclass(kw_only=True)
class AnthropicProvider(FakeProvider):
    """Anthropic's API under /v1: `/v1/messages` answers MESSAGE, or MESSAGE_STREAM (`"stream": true`) in the
    parts above, each written on its own; model `overloaded` gets 529 OVERLOADED with a `request-id`; `held`
    streams MESSAGE_START, sets `holding` and waits for `release`. `/v1/messages/count_tokens` answers COUNT."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.routes = {"/v1/messages": self.messages, "/v1/messages/count_tokens": self.count}

    async def count(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=COUNT, content_type="application/json")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body["model"] == "overloaded":
            return web.Response(
                status=529, body=OVERLOADED, content_type="application/json", headers={"request-id": "req_fake"}
            )
        if not body.get("stream"):
            return web.Response(body=MESSAGE, content_type="application/json", headers={"request-id": "req_fake"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "request-id": "req_fake"})
        await response.prepare(request)
        await response.write(MESSAGE_START)
        if body["model"] == "held":
            self.holding.set()
            await self.release.wait()
        for part in MESSAGE_REST:
            await response.write(part)
        await response.write_eof()
        return response


# --- OpenAI's Responses API ----------------------------------------------------------------------------------

RESPONSE_USAGE = {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11}  # fmt: skip


def response_object(rid: str, text: str, model: str, status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_" + rid, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    return {
        "id": rid,
        "object": "response",
        "created_at": 1735689600,
        "status": status,
        "model": model,
        "output": [item] if done else [],
        "usage": RESPONSE_USAGE if done else None,
    }


def response_events(rid: str, text: str, model: str) -> list[bytes]:
    """A typed stream: created, one delta per word, completed (with usage); each event's bytes on its own."""
    events = [{"type": "response.created", "response": response_object(rid, "", model, "in_progress")}]
    for word in text.split(" "):
        # A delta quoting `"response":` in its text must not be taken for a lifecycle event.
        events.append({"type": "response.output_text.delta", "item_id": "msg_" + rid, "output_index": 0,
                       "content_index": 0, "delta": word + ' "response": '})  # fmt: skip
    events.append({"type": "response.completed", "response": response_object(rid, text, model)})
    return [sse(str(e["type"]), {**e, "sequence_number": n}) for n, e in enumerate(events)]


@dataclass(kw_only=True)
class ResponsesProvider(FakeProvider):
    """A provider of the Responses API under /v1 whose ids start with `resp_{name}`, so a test sees who made one.
    POST /v1/responses answers the response object (text "Hi from {name}"), or its typed stream; model `held`
    holds the stream after its first event. The follow-ups (GET, DELETE, input_items, cancel) answer for the ids
    this provider made and 404 others, in OpenAI's envelope."""

    name: str
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    made: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.routes = {"/v1/responses": self.create}
        self.default = self.followup

    def next_id(self) -> str:
        return f"resp_{self.name}{len(self.made) + 1}"

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        rid, model, text = self.next_id(), body["model"], f"Hi from {self.name}"
        self.made[rid] = response_object(rid, text, model)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(self.made[rid]), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first, *rest = response_events(rid, text, model)
        await response.write(first)
        if model == "held":
            self.holding.set()
            await self.release.wait()
        for event in rest:
            await response.write(event)
        await response.write_eof()
        return response

    async def followup(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")  # ["", "v1", "responses", id, tail?]
        rid = parts[3] if len(parts) > 3 else ""
        found = self.made.get(rid)
        if found is None:
            error = {"message": f"Response with id '{rid}' not found.", "type": "invalid_request_error",
                     "param": None, "code": None}  # fmt: skip
            return web.json_response({"error": error}, status=404)
        tail = parts[4] if len(parts) > 4 else ""
        if tail == "input_items":
            item = {"id": "msg_in", "type": "message", "role": "user", "status": "completed",
                    "content": [{"type": "input_text", "text": "hi"}]}  # fmt: skip
            return web.json_response({"object": "list", "data": [item], "first_id": "msg_in", "last_id": "msg_in",
                                      "has_more": False})  # fmt: skip
        if tail == "cancel":
            return web.json_response({**found, "status": "cancelled"})
        if request.method == "DELETE":
            del self.made[rid]
            return web.json_response({"id": rid, "object": "response", "deleted": True})
        return web.json_response(found)
