"""One keep-alive HTTP/1.1 connection to a provider: the request written in one go, the answer parsed by llhttp
(httptools) as it arrives, its body handed out chunk by chunk with back-pressure. A connection is the transport's
`Response` while it carries an answer (`pool.py` owns the connections, `client.py` is the transport).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterable, Iterable
from typing import Protocol, cast

import httptools
import structlog
from multidict import CIMultiDict

from gateway.upstream.transport import (
    AnswerTimedOut,
    BrokenBody,
    Disconnected,
    HeadTimedOut,
    InvalidAnswer,
    ReadTimedOut,
    TransportError,
)

__all__ = ["Connection", "Deadlines"]

log = structlog.get_logger("gateway.upstream")

# Reading pauses when this much of an answer waits for a slow client, and resumes once the relay has taken it.
_HIGH_WATER = 256 * 1024
# A head this large is not an LLM provider's answer: refuse it rather than buffer it.
_MAX_HEAD = 64 * 1024
# A byte of a reason phrase that is not plain text (tab, space, visible ASCII): llhttp lets control bytes, DEL and
# obs-text through, and aiohttp refuses to write a status line with a control byte (the client loses its answer).
_NOT_TEXT = re.compile(r"[^\t\x20-\x7e]").search


# Granularity of the waits' limits: they are seconds long, so a twentieth of a second either way is nothing.
TICK = 0.05


class Deadlines:
    """Coarse timers for the waits of many connections: one event-loop timer every TICK while any bounded wait is
    pending, instead of one timer per wait (a stream waits once per chunk; see docs/performance.md)."""

    __slots__ = ("_handle", "_waiting")

    def __init__(self) -> None:
        self._waiting: set[Connection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, conn: Connection) -> None:
        self._waiting.add(conn)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(TICK, self._tick)

    def discard(self, conn: Connection) -> None:
        self._waiting.discard(conn)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [conn for conn in self._waiting if conn.expires <= now]:
            conn.expire()
        self._handle = loop.call_later(TICK, self._tick) if self._waiting else None


class ConnectionOwner(Protocol):
    def release(self, conn: Connection) -> None: ...

    def discard(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """A client connection: one request at a time, reused while both sides keep it alive."""

    __slots__ = (
        "_body",
        "_buffered",
        "_complete",
        "_deadlines",
        "_early",
        "_sending",
        "_write_paused",
        "_expired",
        "_error",
        "_framing",
        "_head_bytes",
        "_header_size",
        "_headers",
        "_head_only",
        "_loop",
        "_paused",
        "_waiter",
        "chunked",
        "closed",
        "content_length",
        "content_type",
        "expires",
        "idle_since",
        "key",
        "keep_alive",
        "parser",
        "pool",
        "reason",
        "requests",
        "status",
        "transport",
    )

    def __init__(
        self, key: tuple[str, str, int], deadlines: Deadlines | None = None, pool: ConnectionOwner | None = None
    ) -> None:
        self.key = key
        self.pool = pool
        # Kept: a request waits on its connection several times, and asking the loop is a system call on 3.11.
        self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines() if deadlines is None else deadlines
        self.expires = 0.0
        self._expired = False
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        self._write_paused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = ""
        self.content_length: int | None = None
        self.content_type = ""
        self.chunked = False
        self.keep_alive = False
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._header_size = 0
        self._framing = 0
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._paused = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head_only = False
        self._early = False
        self._sending = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but they are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.parser is None or self._complete:
            # Bytes while no request is out, or after the whole answer: an answer nobody asked for. Provider and
            # gateway no longer agree on the exchange; the connection must not serve another request.
            self._fail(InvalidAnswer("bytes from the provider outside an answer"))
            return
        heading = not self.status
        if heading:
            if not self._head_bytes and (
                self._sending or (self.transport is not None and self.transport.get_write_buffer_size())
            ):
                # The provider answers while part of the request is still ours to write: it has not read it all,
                # and what it has not read would be taken for the next request's bytes. Never reused.
                self._early = True
            self._head_bytes += len(data)
        else:
            self._framing += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidAnswer("the provider switched protocols"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, InvalidAnswer):  # raised by one of the callbacks below
                self._fail(exc.__context__)
            else:
                self._fail(InvalidAnswer(f"malformed answer ({exc})"))
        else:
            # Counted as bytes arrive, not per parsed header: a status line or a header that never ends is
            # refused as soon as it is too long, never buffered without bound.
            if heading and not self.status and self._head_bytes > _MAX_HEAD:
                self._fail(InvalidAnswer("the provider's response head is too large"))
            elif self._framing > _MAX_HEAD:
                # Bytes since the last body bytes: chunk sizes, extensions, trailers. llhttp keeps a trailer field
                # that never ends, so without this bound a provider could fill the gateway's memory after the body.
                self._fail(InvalidAnswer("the provider's chunk framing or trailers are too large"))

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed provider connection is of no further use

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.parser is not None and not self._complete and self._error is None:
            if self.status and exc is None and self.content_length is None and not self.chunked:
                # Neither a length nor chunked framing: the answer ends when the provider closes the connection.
                self._complete = True
                self.keep_alive = False
            elif self.status:
                self._error = BrokenBody("the provider closed the connection mid-answer")
            elif self._head_bytes:
                # It had begun to answer: not a connection that was dead before the request, never replayed.
                self._error = InvalidAnswer("the provider closed the connection mid-head")
            else:
                self._error = Disconnected("the provider closed the connection")
        self._wake()

    def pause_writing(self) -> None:
        # A request written whole is buffered by the transport; a streamed one waits here for the provider to read.
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer in the same read as the end of the first: nobody asked for it (data_received
            # catches the bytes that come in a later read).
            raise InvalidAnswer("bytes from the provider outside an answer")

    def on_status(self, reason: bytes) -> None:
        self._header_size += len(reason)
        if self._header_size > _MAX_HEAD:
            raise InvalidAnswer("the provider's response head is too large")
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that arrives whole in one read is not caught by data_received's count: count what is parsed.
        self._header_size += len(name) + len(value)
        if self._header_size > _MAX_HEAD:
            raise InvalidAnswer("the provider's response head is too large")
        if self.status:
            # After the head: a trailer field of a chunked body, which llhttp reports like a header. The gateway
            # relays no trailers; it must not become one of the answer's headers either.
            return
        try:
            # aiohttp writes header values as UTF-8: a UTF-8 value reaches the client byte for byte.
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            # Any other bytes >= 0x80 (Latin-1, say) could only reach the client re-encoded, which is another
            # value: the field is not relayed, and the log says which (never its value).
            log.warning("provider header not relayed: its value is not UTF-8", header=name.decode("latin-1"))
            return
        self._headers.append((name.decode("latin-1"), text))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            # An interim answer (103 Early Hints): llhttp goes on to the final one; forget these headers.
            self._headers.clear()
            self.reason = ""
            return
        self.status = status
        reason = self.reason
        if reason and not (reason.isascii() and reason.isprintable()) and _NOT_TEXT(reason):
            # Not plain text: dropped, and the client gets the standard phrase of the status.
            self.reason = ""
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length":
                # llhttp has checked it (digits, perhaps trailing spaces; one only; none beside Transfer-Encoding).
                self.content_length = int(value)
            elif lowered == "content-type":
                self.content_type = value.partition(";")[0].strip().lower()
            elif lowered == "transfer-encoding" and value:
                # llhttp's own rule (RFC 9112 6.3): chunked framing when the last coding of the last non-empty
                # Transfer-Encoding is `chunked` (only spaces after it); otherwise the body runs to the close.
                self.chunked = value == "chunked" or (
                    value.rpartition(",")[2].lstrip(" \t").rstrip(" ").lower() == "chunked"
                )
        if self._head_only:
            # The answer to HEAD has no body whatever its headers say; llhttp cannot be told, so stop here.
            self._complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            return
        self._framing = 0
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status and not self._head_only:
            self._complete = True
            self.keep_alive = self.parser is not None and self.parser.should_keep_alive()
            self._wake()

    # the request and its answer

    def send(self, head: bytes, body: bytes | None, *, head_only: bool = False) -> None:
        """Write one request; the parser is armed for its answer (`head_only`: the answer to a HEAD request)."""
        assert self.transport is not None
        self._reset()
        self._head_only = head_only
        self.requests += 1
        self.parser = httptools.HttpResponseParser(self)
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)

    async def send_stream(self, chunks: AsyncIterable[bytes], *, chunked: bool, stall: float | None) -> None:
        """Write a streamed body after `send`'s head, a chunk at a time, taking the next one only when the provider
        has read enough of the last (the transport's write buffer below its high-water mark): an upload is never
        held whole. Stops early when the provider answers or fails first; its answer is then read as usual, and the
        connection is never reused. `stall` bounds how long the provider may leave the buffer full (HeadTimedOut)."""
        transport = self.transport
        assert transport is not None
        self._sending = True
        try:
            async for chunk in chunks:
                if self.status or self._head_bytes or self._error is not None or self.closed:
                    self._early = True  # the rest of the request will never be read as such
                    return
                if chunk:
                    if chunked:
                        transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                    else:
                        transport.write(chunk)
                while self._write_paused and not (self.status or self._head_bytes or self._error or self.closed):
                    await self._wait(None if stall is None else self._loop.time() + stall)
            if chunked and not self.closed:
                transport.write(b"0\r\n\r\n")
        finally:
            self._sending = False

    async def head(self, until: float | None = None) -> None:
        """Wait for the answer's status line and headers; HeadTimedOut at loop time `until`."""
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait(until, HeadTimedOut)

    @property
    def headers(self) -> CIMultiDict[str]:
        return CIMultiDict(self._headers)

    @property
    def header_items(self) -> Iterable[tuple[str, str]]:
        return self._headers

    @property
    def complete(self) -> bool:
        """The whole answer is in (and buffered): nothing more will come."""
        return self._complete

    @property
    def buffered(self) -> int:
        """Bytes of the body received and not yet handed out."""
        return self._buffered

    def take_buffered(self) -> bytes:
        """Everything received and not yet handed out, as one piece."""
        body = self._body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        self._resume()
        return data

    async def read(self, idle: float | None, until: float | None = None) -> bytes:
        """The next piece of the body, b"" at its end. `idle` bounds a silence of the provider (ReadTimedOut),
        `until` (loop time) the whole answer (AnswerTimedOut)."""
        while True:
            if self._body:
                # The whole limit holds even for a provider fast enough that nothing is ever waited for.
                if until is not None and self._loop.time() >= until:
                    raise AnswerTimedOut(AnswerTimedOut.message)
                # Everything that has arrived, in one piece: a burst of events costs the client one write, not one
                # per chunk of the provider's framing.
                return self.take_buffered()
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            if idle is None:
                await self._wait(until, AnswerTimedOut)
                continue
            silence_ends = self._loop.time() + idle
            if until is None or silence_ends < until:
                await self._wait(silence_ends, ReadTimedOut)
            else:
                await self._wait(until, AnswerTimedOut)

    @property
    def reusable(self) -> bool:
        """Whole answer read, both sides agreeing to keep the connection, and the answer begun only after the whole
        request was written: it may serve another request."""
        return (
            self._complete
            and self.keep_alive
            and not self._body
            and not self.closed
            and self._error is None
            and not self._early
        )

    def release(self) -> None:
        """The answer was read to its end: back to the pool, which keeps it if it may serve again."""
        if self.pool is not None:
            self.pool.release(self)
        else:
            self.close()

    def discard(self) -> None:
        """Any other state (cancelled, failed, half-read): closed at once, never reused."""
        if self.pool is not None:
            self.pool.discard(self)
        else:
            self.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            if self._early:
                # The rest of a request already answered is of no use: dropped, not flushed to a provider that may
                # never read it.
                self.transport.abort()
            else:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # internals

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        self._wake()

    def _resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    async def _wait(
        self, until: float | None = None, expiry: type[HeadTimedOut | ReadTimedOut | AnswerTimedOut] = HeadTimedOut
    ) -> None:
        waiter = self._waiter = self._loop.create_future()
        if until is not None:
            self.expires = until
            self._deadlines.add(self)
        try:
            await waiter
        finally:
            self._waiter = None
            if until is not None:
                self._deadlines.discard(self)
        if self._expired:
            self._expired = False
            raise expiry(expiry.message)

    def expire(self) -> None:
        """Called by Deadlines when a bounded wait has run out."""
        if self._waiter is not None and not self._waiter.done():
            self._expired = True
            self._waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
