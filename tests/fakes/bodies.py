"""What crosses the wire: the chat request a client sends, and the answers and stream events a provider sends."""

from __future__ import annotations

from typing import Any

import orjson

CHAT = "/v1/chat/completions"
DONE = b"data: [DONE]\n\n"


def chat(model: str = "p/m", stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A chat request body with one user message; "stream" only when streaming (as clients send it), then `extra`
    (any other field, `stream_options` or `provider` say)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def chat_answer(model: str = "m", content: str = "hi", usage: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage:
        answer["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return answer


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One chat.completion.chunk event."""
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


def event(n: int) -> bytes:
    """A small stream event whose content is `n`: streams of numbered events tell where a cut fell."""
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + str(n).encode() + b'"}}]}\n\n'
