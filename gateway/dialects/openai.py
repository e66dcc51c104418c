"""OpenAI's dialect: the request shapes the gateway checks (a chat request, any body that names a model) and the
error envelope `{"error": {"message", "type", "code"}}` that OpenAI's SDKs read.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson

from gateway.dialects.base import Dialect
from gateway.errors import InvalidRequest


def envelope(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


def error_body(status: int, message: str, type_: str, code: str | None) -> bytes:
    return orjson.dumps(envelope(message, type_, code))


DIALECT = Dialect("openai", error_body)


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    refuse_duplicate_keys(raw)
    return body


def refuse_duplicate_keys(raw: bytes) -> None:
    """400 `duplicate_key` when the body repeats a key in any object. orjson keeps the last of duplicates while a
    provider's parser may keep the first, so a body with them would not mean to the provider what the gateway
    checked (the model, an image hidden from the vision check). The exact check (every object) runs only when a
    judged key's text appears twice or the body mentions an image; other bodies pass on a few counts."""
    # Inside a JSON string a quote is always escaped: `"model"` in the raw bytes is the key, or a value "model".
    count = raw.count
    if (
        count(b'"model"') < 2
        and count(b'"messages"') < 2
        and count(b'"stream"') < 2
        and count(b'"provider"') < 2
        and count(b'"stream_options"') < 2
        and b'"image' not in raw
    ):
        return
    try:
        json.loads(raw, object_pairs_hook=_unique)
    except _DuplicateKey as exc:
        raise InvalidRequest(
            f"the request body repeats the key {exc.key!r}; send each key once", code="duplicate_key"
        ) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    built = dict(pairs)
    if len(built) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return built


class ModelRequest(NamedTuple):
    """A request routed by the model it names. Made per request: a named tuple is the cheapest record to build."""

    body: dict[str, Any]
    model: str
    stream: bool
    provider: str | None


def parse_model_request(raw: bytes) -> ModelRequest:
    """Any JSON body routed by its `model` (embeddings, completions, ...): model, optional stream and provider."""
    body = parse_object(raw)
    return _model_request(body, _model(body))


def parse_chat(raw: bytes) -> ModelRequest:
    """A chat completion request: a model request with a non-empty array of message objects."""
    body = parse_object(raw)
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", code="invalid_messages")
    for message in messages:
        if type(message) is not dict:  # orjson builds plain dicts
            raise InvalidRequest("each entry of 'messages' must be an object", code="invalid_messages")
    return _model_request(body, model)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", code="invalid_model")
    return model


def _model_request(body: dict[str, Any], model: str) -> ModelRequest:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", code="invalid_stream")
    provider = body.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise InvalidRequest("'provider' must be a non-empty string", code="invalid_provider")
    return ModelRequest(body, model, stream, provider)


# What else makes a message without content a message: a call the model made, or its refusal.
_CONTENT_BESIDES = ("tool_calls", "function_call", "refusal", "audio")
# A tool's (or a legacy function's) answer is kept even when empty: dropping it would leave its call unanswered,
# which providers reject.
_ANSWERS = frozenset({"tool", "function"})


def without_empty_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The messages without those that carry nothing (content `""`, null or missing without a tool call, an empty
    list of parts), which several providers refuse with a 400 (seed 000's API ignores them); None when no message
    is empty, so the body goes on as it came. 400 when nothing would be left."""
    for message in messages:
        if not message.get("content"):
            break
    else:
        return None  # every message has content (this runs on every chat request: one pass, one test each)
    kept: list[dict[str, Any]] | None = None
    for i, message in enumerate(messages):
        content = message.get("content")
        empty = (
            not content
            and (content is None or content == "" or content == [])
            and message.get("role") not in _ANSWERS
            and not any(message.get(key) for key in _CONTENT_BESIDES)
        )
        if empty:
            if kept is None:
                kept = messages[:i]
        elif kept is not None:
            kept.append(message)
    if kept is not None and not kept:
        raise InvalidRequest("every entry of 'messages' is empty; send one with content", code="invalid_messages")
    return kept


_USAGE = b'"usage"'


class UsageChunkStrip:
    """Removes from a chat stream the usage chunk the gateway asked for on the client's behalf (it reads usage for
    its own accounting; the client did not ask for it, and a loop reading `chunk.choices[0]` would fail on it).

    Fed the stream's bytes as they pass. Complete events go on at once and unchanged; only the unfinished last
    event of a read is held until its end arrives (a client reads events whole anyway), so that a usage chunk split
    over reads is recognised before any of it has gone out."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._held and chunk.endswith(b"\n\n") and _USAGE not in chunk:
            return chunk  # the common read: whole events, none of them usage
        data = self._held + chunk if self._held else chunk
        cut = _last_boundary(data)
        complete, self._held = data[:cut], data[cut:]
        if _USAGE not in complete:
            return complete
        return b"".join(event for event in _events(complete) if not _is_usage_chunk(event))

    def finish(self) -> bytes:
        """What is still held when the stream ends (an event that never completed): sent as it came."""
        held, self._held = self._held, b""
        return held


def _last_boundary(data: bytes) -> int:
    """Just past the last blank line (LF or CRLF framing); 0 when there is none."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _events(data: bytes) -> list[bytes]:
    """Complete events, each with the blank line that ends it."""
    events = []
    pos = 0
    while pos < len(data):
        lf, crlf = data.find(b"\n\n", pos), data.find(b"\r\n\r\n", pos)
        ends = [i + 2 for i in (lf,) if i >= 0] + [i + 4 for i in (crlf,) if i >= 0]
        end = min(ends) if ends else len(data)
        events.append(data[pos:end])
        pos = end
    return events


def _is_usage_chunk(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                parsed = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            return isinstance(parsed, dict) and parsed.get("choices") == [] and isinstance(parsed.get("usage"), dict)
    return False
