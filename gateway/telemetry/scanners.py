"""Token usage read from an answer as its bytes pass by: the `usage` object of a JSON body, or of the events of a
stream that carry it (OpenAI's usage chunk, Anthropic's `message_start` and `message_delta`, the Responses API's
terminal event). Streams are scanned line by line with only the unfinished line kept; nothing is buffered whole.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.exchange import Usage

# A JSON answer is kept up to this size to read its usage; larger ones are relayed without it.
MAX_JSON_BODY = 4 * 1024 * 1024
# An SSE line longer than this cannot be a usage event worth reading; it is skipped, not kept.
MAX_SSE_LINE = 1024 * 1024
_USAGE = b'"usage"'
# A delta that carries something for the user: a non-empty string in content, reasoning or tool arguments. The
# role-only first chunk (`"content":""`), keep-alive comments and empty deltas do not count.
_CONTENT = re.compile(rb'"(?:content|reasoning_content|reasoning|arguments)"\s*:\s*"[^"]')
# The same for Anthropic's deltas (text, thinking, tool input) and the Responses API's (every `*.delta` event
# carries its text or arguments in `delta`).
_MESSAGES_CONTENT = re.compile(rb'"(?:text|thinking|partial_json)"\s*:\s*"[^"]')
_RESPONSES_CONTENT = re.compile(rb'"delta"\s*:\s*"[^"]')


class UsageScanner:
    """Fed every chunk of an answer; `usage` holds what the answer reported, once it has been seen."""

    _usage: Usage | None = None
    # A usage report was there but not believed (counts that are not plain integers from 0 to 10 million): the
    # metrics count it, so a provider that sends `true` or 2**64 - 1 is seen rather than silently free.
    refused = False
    first_content_at: float | None = None  # set by stream scanners (SseUsage)

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def _take(self, value: Any) -> None:
        """A reported `usage` value: believed, or refused when it is one but not sane."""
        found = Usage.of(value)
        if found is not None:
            self._usage = found
        elif value is not None:
            self.refused = True

    def feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The answer ended."""

    def whole(self, body: bytes) -> None:
        """The whole answer, in one piece."""
        self.feed(body)
        self.finish()


class JsonUsage(UsageScanner):
    """A JSON answer is kept (up to MAX_JSON_BODY) and parsed when its usage is first asked for: by the access line
    and metrics, after the answer has reached the client, not on the way to it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._answer: bytes | None = None  # the whole answer, not parsed yet
        self._body: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= MAX_JSON_BODY:
            self._parts.append(chunk)

    def finish(self) -> None:
        if self._size > MAX_JSON_BODY or not self._parts:
            return
        self._answer = b"".join(self._parts)
        self._parts = []

    def whole(self, body: bytes) -> None:
        if len(body) <= MAX_JSON_BODY:
            self._answer = body

    @property
    def usage(self) -> Usage | None:
        self._read()
        return self._usage

    @property
    def body(self) -> dict[str, Any] | None:
        """The parsed answer, when it reported usage."""
        self._read()
        return self._body

    def _read(self) -> None:
        answer, self._answer = self._answer, None
        if answer is None or _USAGE not in answer:
            return
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return
        if isinstance(parsed, dict):
            self._body = parsed
            self._take(parsed.get("usage"))


class SseUsage(UsageScanner):
    """OpenAI's chat and completions streams: the `usage` of the chunk that carries it. Subclasses read another
    dialect's events: `content` finds the first token, `trigger` the lines worth parsing, `_event` reads one."""

    content = _CONTENT
    trigger = _USAGE
    # What times the first token: perf_counter; a model group's routing sets its own on the scanner of its request
    # (perf_counter too, outside tests), as its measurements are kept.
    clock: Callable[[], float] = time.perf_counter

    def __init__(self) -> None:
        self._pending = b""
        self.events = 0
        # `clock` when the first line with content passed (time to first token); found once, then unchecked.
        self.first_content_at: float | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data if len(data) <= MAX_SSE_LINE else b""
            return
        self._pending = data[cut + 1 :] if len(data) - cut - 1 <= MAX_SSE_LINE else b""
        complete = data[: cut + 1]
        if self.first_content_at is None and self.content.search(complete):
            self.first_content_at = self.clock()
        if self.trigger in complete:
            self._scan(complete)

    def finish(self) -> None:
        if self._pending and self.trigger in self._pending:
            self._scan(self._pending)
        self._pending = b""

    def _scan(self, lines: bytes) -> None:
        trigger = self.trigger
        for line in lines.split(b"\n"):
            if not line.startswith(b"data:") or trigger not in line:
                continue
            try:
                event = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        self._take(event.get("usage"))


class MessagesSseUsage(SseUsage):
    """Anthropic's Messages stream: `message_start` carries the message's usage, and each `message_delta` counts
    so far (cumulative), overriding the fields it names; the last `output_tokens` is the answer's."""

    content = _MESSAGES_CONTENT

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[str, Any] = {}

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif kind == "message_delta":
            usage = event.get("usage")
        else:
            return
        if isinstance(usage, dict):
            self._fields.update((name, value) for name, value in usage.items() if value is not None)
            self._take(self._fields)


# The Responses API's events that end a response; its usage is on theirs.
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesSseUsage(SseUsage):
    """The Responses API's typed stream: the lifecycle events (`response.created`, ..., the terminal one) carry the
    response object, whose `id` says which response this is and whose `usage` the terminal event fills in."""

    content = _RESPONSES_CONTENT
    # Only lifecycle events have a `response` member; text in a delta would have its quotes escaped.
    trigger = b'"response":'

    def __init__(self) -> None:
        super().__init__()
        self.response_id: str | None = None

    def _event(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        if self.response_id is None:
            rid = response.get("id")
            if isinstance(rid, str):
                self.response_id = rid
        if event.get("type") in _TERMINAL:
            self._take(response.get("usage"))
