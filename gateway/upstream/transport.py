"""The seam between the call layer and a wire client: what an upstream request is, what its response offers, the
transport errors, and the one function that turns them into the gateway's errors.

The call layer (`call.py`, `listing.py`) sends an `UpstreamRequest` through a `Transport` and reads a `Response`;
it never sees request lines, CRLF or sockets. The lean HTTP/1.1 client (`http1/`) is the default transport; an
adapter for another client (HTTP/2, an unusual proxy) implements the same two protocols.

    TransportError                  any failure to exchange bytes with a provider (never holds a URL)
    ├── ConnectFailed               retryable
    ├── TLSFailed                   certificate or handshake: never retried
    ├── Disconnected                closed before any byte of an answer: retryable only if replayable
    ├── InvalidAnswer               bytes that are not an HTTP answer
    ├── BrokenBody                  the body ended before its declared end
    ├── InvalidHeader               a header that would not stay one line (refused before sending)
    └── TimedOut                    a limit ran out
        ├── ConnectTimedOut         opening a connection (or waiting for a free one): retryable
        ├── HeadTimedOut            no answer head within the limit
        ├── ReadTimedOut            a silence mid-answer longer than the idle limit
        └── AnswerTimedOut          the whole answer took longer than its limit
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import NamedTuple, Protocol

from multidict import CIMultiDict
from yarl import URL

from gateway.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout

# End-to-end headers as (name, value) pairs, as the server's parser hands a client's over.
Headers = Sequence[tuple[bytes, bytes]]

# Go's net/http rules: a request that may have reached the provider is sent again only when doing it twice is
# harmless, by its method or because the client gave it an idempotency key.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_IDEMPOTENCY_HEADERS = frozenset({b"idempotency-key", b"x-idempotency-key"})


class StreamedBody:
    """A request body sent as it is read (an upload), never held whole: `length` when it is known (sent with
    Content-Length), else None (sent chunked). Its chunks can be taken once: as soon as the first one is, `started`
    is set, and an attempt that fails after that is not retried (nothing is left to send again)."""

    __slots__ = ("_chunks", "length", "started")

    def __init__(self, chunks: AsyncIterator[bytes], length: int | None) -> None:
        self._chunks = chunks
        self.length = length
        self.started = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._take()

    async def _take(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self._chunks:
            yield chunk


class UpstreamRequest(NamedTuple):
    """What the call layer sends: Host, framing and proxy headers are the transport's business."""

    method: str
    url: URL
    headers: Headers
    body: bytes | StreamedBody | None

    @property
    def replayable(self) -> bool:
        """Whether sending it twice is harmless (asked only when an attempt failed after it was written). A streamed
        body that has begun to go out cannot be sent again, whatever the method."""
        if not self.resendable:
            return False
        if self.method in IDEMPOTENT_METHODS:
            return True
        return any(name.lower() in _IDEMPOTENCY_HEADERS for name, _ in self.headers)

    @property
    def resendable(self) -> bool:
        """Whether the body can still be sent (again): always, unless it is a stream already begun."""
        body = self.body
        return not (isinstance(body, StreamedBody) and body.started)


class Response(Protocol):
    """A provider's answer, from its head on: the body arrives through `take_buffered` and `read`. The caller ends
    it with `release` (read to the end: the connection may serve again) or `discard` (any other state)."""

    status: int
    reason: str
    content_type: str  # lower case, without parameters
    content_length: int | None
    chunked: bool

    @property
    def header_items(self) -> Iterable[tuple[str, str]]: ...

    @property
    def headers(self) -> CIMultiDict[str]: ...

    @property
    def complete(self) -> bool:
        """The whole answer is in: nothing more will come."""
        ...

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet handed out."""
        ...

    def take_buffered(self) -> bytes: ...

    async def read(self, idle: float | None, until: float | None = None) -> bytes:
        """The next piece of the body, b"" at its end; `idle` bounds a silence (ReadTimedOut), `until` (loop time)
        the whole answer (AnswerTimedOut)."""
        ...

    def release(self) -> None: ...

    def discard(self) -> None: ...


class Transport(Protocol):
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop whose clock `send`'s and `read`'s deadlines are in."""
        ...

    async def send(self, request: UpstreamRequest, *, connect: float | None, head_by: float | None) -> Response:
        """One attempt: a connection (within `connect` seconds), the request, the answer's head (by loop time
        `head_by`). A pooled connection the provider closed without answering is replaced once, at no cost to the
        caller, when the request is replayable; otherwise the failure is not retryable."""
        ...

    async def close(self) -> None: ...


class TransportError(Exception):
    """Any failure to exchange bytes with a provider; the message never holds a URL (it may hold a key)."""

    retryable = False


class ConnectFailed(TransportError):
    retryable = True


class TLSFailed(TransportError):
    """Certificate or handshake failure: not transient, never retried."""


class Disconnected(TransportError):
    """The provider closed the connection before any byte of an answer. The request may have been read: the
    transport marks it not retryable unless the request is replayable."""

    retryable = True


class InvalidAnswer(TransportError):
    """Bytes that are not an HTTP/1.1 answer."""


class BrokenBody(TransportError):
    """The answer's body ended before its declared end."""


class InvalidHeader(TransportError):
    """A header name or value with a line break: it would not stay one line on the wire."""


class TimedOut(TransportError):
    """A limit ran out."""

    message = "a limit ran out"


class ConnectTimedOut(TimedOut):
    retryable = True
    message = "no connection within its limit"


class HeadTimedOut(TimedOut):
    """No answer head within the limit."""

    message = "no answer from the provider within its limit"


class ReadTimedOut(TimedOut):
    """The provider went silent mid-answer for longer than the idle limit."""

    message = "the provider went silent mid-answer for longer than its limit"


class AnswerTimedOut(TimedOut):
    """The whole answer took longer than its limit."""

    message = "the answer took longer than its limit"


def gateway_error(
    exc: TransportError | TimeoutError,
    subject: str = "the provider",
    limit: float | None = None,
    late: str = "did not answer",
) -> GatewayError:
    """The gateway's error for a failed call: 504 for a limit that ran out, 400 for a header the client sent that
    cannot be forwarded, 502 for the rest. `limit` is the head limit waited for, `late` what the timeout message
    says the provider failed to do."""
    if isinstance(exc, ConnectTimedOut):
        return UpstreamTimeout(f"{subject} could not connect in time")
    if isinstance(exc, TimedOut | TimeoutError):
        within = f" within {limit:g}s" if limit is not None else " in time"
        return UpstreamTimeout(f"{subject} {late}{within}")
    if isinstance(exc, InvalidHeader):
        return InvalidRequest("a request header holds a line break", code="invalid_header")
    return UpstreamError(f"{subject} could not be reached: {exc}")
