"""Token usage read from an answer as its bytes pass by: the `usage` object of a JSON body or of a stream's
usage event. Streams are scanned line by line with only the unfinished line kept; nothing is buffered whole.
"""

from __future__ import annotations

import re
import time
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


class UsageScanner:
    """Fed every chunk of an answer; `usage` holds what the answer reported, once it has been seen."""

    _usage: Usage | None = None
    first_content_at: float | None = None  # set by stream scanners (SseUsage)

    @property
    def usage(self) -> Usage | None:
        return self._usage

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
            self._usage = Usage.of(parsed.get("usage"))


class SseUsage(UsageScanner):
    def __init__(self) -> None:
        self._pending = b""
        self.events = 0
        # perf_counter when the first line with content passed (time to first token); found once, then unchecked.
        self.first_content_at: float | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data if len(data) <= MAX_SSE_LINE else b""
            return
        self._pending = data[cut + 1 :] if len(data) - cut - 1 <= MAX_SSE_LINE else b""
        complete = data[: cut + 1]
        if self.first_content_at is None and _CONTENT.search(complete):
            self.first_content_at = time.perf_counter()
        if _USAGE in complete:
            self._scan(complete)

    def finish(self) -> None:
        if self._pending and _USAGE in self._pending:
            self._scan(self._pending)
        self._pending = b""

    def _scan(self, lines: bytes) -> None:
        for line in lines.split(b"\n"):
            if not line.startswith(b"data:") or _USAGE not in line:
                continue
            try:
                event = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                found = Usage.of(event.get("usage"))
                if found is not None:
                    self._usage = found
