"""The lean provider client (gateway/upstream/http1/connection.py) against raw providers on 127.0.0.1 that send
exact bytes: framing, interim answers, broken and hostile answers, silence, back-pressure and keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.upstream.http1.connection import Connection
from gateway.upstream.transport import (
    AnswerTimedOut,
    BrokenBody,
    Disconnected,
    HeadTimedOut,
    InvalidAnswer,
    ReadTimedOut,
)
from tests.fakes.net import RawServer, wait_for

Script = Callable[["RawProvider", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

REQUEST = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HEAD_REQUEST = b"HEAD /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
LIMIT = 5.0  # the bound on every wait; nothing here should come near it


class RawProvider(RawServer):
    """A provider on 127.0.0.1 that runs `script` on each connection it accepts, and records each request head."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.client_closed = asyncio.Event()  # the client closed its end of a connection (EOF seen)

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head

    async def until_client_closes(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        self.client_closed.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.script(self, reader, writer)


@pytest.fixture
async def provider() -> AsyncIterator[Callable[[Script], Awaitable[RawProvider]]]:
    started: list[RawProvider] = []

    async def start(script: Script) -> RawProvider:
        raw = RawProvider(script)
        await raw.start()
        started.append(raw)
        return raw

    yield start
    for raw in started:
        await raw.stop()


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[Connection]:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(("http", "127.0.0.1", port)), "127.0.0.1", port)
    try:
        yield conn
    finally:
        conn.abort()
        await asyncio.sleep(0)  # let the transport finish closing its socket


async def read_all(conn: Connection) -> bytes:
    parts = []
    async with asyncio.timeout(LIMIT):
        while chunk := await conn.read(LIMIT):
            parts.append(chunk)
    return b"".join(parts)


async def exchange(conn: Connection, request: bytes = REQUEST, head_only: bool = False) -> None:
    conn.send(request, None, head_only=head_only)
    async with asyncio.timeout(LIMIT):
        await conn.head()


def answers(*answer: bytes, then: str = "wait") -> Script:
    """A script: read one request, write each piece of the answer (draining after each), then `then`:
    "wait" for the client to close, or "close" at once."""

    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.request(reader)
        for piece in answer:
            writer.write(piece)
            await writer.drain()
        if then == "wait":
            await raw.until_client_closes(reader)

    return script


# ---- framing ---------------------------------------------------------------------------------------------------


async def test_a_content_length_answer(provider) -> None:
    raw = await provider(
        answers(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 11\r\n"
            b"X-Request-ID: up-1\r\n\r\n"
            b'{"ok":true}'
        ),
    )
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.reason) == (200, "OK")
        assert (conn.content_length, conn.content_type, conn.chunked) == (11, "application/json", False)
        assert list(conn.header_items) == [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", "11"),
            ("X-Request-ID", "up-1"),
        ]
        assert conn.headers["x-request-id"] == "up-1"
        assert await read_all(conn) == b'{"ok":true}'
        assert conn.complete
        assert conn.buffered == 0
        assert conn.reusable
    assert raw.heads == [REQUEST]


async def test_a_small_whole_answer_can_be_taken_in_one_piece(provider) -> None:
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        await wait_for(lambda: conn.complete)
        assert conn.buffered == 10
        assert conn.take_buffered() == b"0123456789"
        assert conn.buffered == 0
        assert conn.reusable


async def test_a_chunked_answer_is_decoded_to_its_body(provider) -> None:
    raw = await provider(
        answers(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6;ext=1\r\n world\r\n",
            b"1a\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n",
            b"0\r\n\r\n",
        ),
    )
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.chunked, conn.content_length, conn.content_type) == (
            200,
            True,
            None,
            "text/event-stream",
        )
        assert await read_all(conn) == b"hello world" + b"abcdefghijklmnopqrstuvwxyz"
        assert conn.complete
        assert conn.reusable


async def test_an_answer_without_length_or_chunks_ends_when_the_provider_closes(provider) -> None:
    raw = await provider(
        answers(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ", b"second", then="close"),
    )
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.content_length, conn.chunked) == (200, None, False)
        assert await read_all(conn) == b"first second"
        assert conn.complete
        assert not conn.reusable


async def test_the_answer_to_head_has_no_body_whatever_its_length_says(provider) -> None:
    """The provider keeps the connection open and sends no body: reading must end at once, not wait for 1234
    bytes that will never come."""
    raw = await provider(
        answers(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n"),
    )
    async with connection(raw.port) as conn:
        await exchange(conn, HEAD_REQUEST, head_only=True)
        assert (conn.status, conn.content_length) == (200, 1234)
        assert conn.complete
        async with asyncio.timeout(LIMIT):
            assert await conn.read(None) == b""
        assert conn.buffered == 0
    assert raw.heads == [HEAD_REQUEST]


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n",
    ],
    ids=["103", "100-then-103"],
)
async def test_interim_answers_before_the_final_one_are_skipped(provider, interim) -> None:
    raw = await provider(answers(interim, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.reason) == (200, "OK")
        assert list(conn.header_items) == [("Content-Length", "2"), ("X-Final", "yes")]
        assert "Link" not in conn.headers
        assert await read_all(conn) == b"ok"
        assert conn.reusable


async def test_a_second_request_on_a_kept_alive_connection_gets_a_fresh_answer(provider) -> None:
    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-First: 1\r\n\r\nfirst")
        await raw.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n")
        await raw.until_client_closes(reader)

    raw = await provider(script)
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.reason, conn.content_length) == (201, "Created", 5)
        assert await read_all(conn) == b"first"
        assert conn.reusable
        await exchange(conn)
        assert (conn.status, conn.reason, conn.content_length, conn.chunked) == (200, "OK", None, True)
        assert list(conn.header_items) == [("Transfer-Encoding", "chunked")]
        assert await read_all(conn) == b"second"
        assert conn.reusable
        assert conn.requests == 2
    assert raw.connections == 1
    assert raw.heads == [REQUEST, REQUEST]


@pytest.mark.parametrize("pieces", [1, 3], ids=["one-read", "separate-reads"])
async def test_trailers_of_a_chunked_answer_are_not_headers(provider, pieces) -> None:
    """llhttp reports trailer fields through on_header after the body: they are dropped, never added to the
    answer's headers (a provider's Set-Cookie trailer once reached the client as a header)."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Set-Cookie, X-Checksum\r\n\r\n"
    body = b"2\r\nok\r\n0\r\n"
    trailers = b"Set-Cookie: session=stolen\r\nX-Checksum: 1234\r\n\r\n"
    raw = await provider(answers(head + body + trailers) if pieces == 1 else answers(head, body, trailers))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert await read_all(conn) == b"ok"
        assert conn.complete
        assert list(conn.header_items) == [("Transfer-Encoding", "chunked"), ("Trailer", "Set-Cookie, X-Checksum")]
        assert "Set-Cookie" not in conn.headers
        assert conn.reusable


async def test_trailers_still_count_towards_the_head_limit(provider) -> None:
    raw = await provider(
        answers(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"2\r\nok\r\n0\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n",
        )
    )
    async with connection(raw.port) as conn:
        await exchange(conn)
        with pytest.raises(InvalidAnswer, match=r"^the provider's response head is too large$"):
            await read_all(conn)
        assert conn.closed
        assert not conn.reusable


# llhttp (httptools 0.7.1) frames a response as chunked when the last coding of the last non-empty
# Transfer-Encoding is `chunked`, followed by nothing but spaces (RFC 9112 6.3); any other Transfer-Encoding makes
# the body run to the close of the connection, its bytes handed out as they are.
CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("fields", "chunked"),
    [
        ([b"chunked"], True),
        ([b"Chunked  "], True),
        ([b"gzip, chunked"], True),
        ([b"identity,\tCHUNKED"], True),
        ([b"identity", b"chunked"], True),
        ([b"chunked", b""], True),  # an empty field changes nothing
        ([b"chunked, identity"], False),
        ([b"xchunked"], False),
        ([b"chunkedx"], False),
        ([b"chunked,"], False),
        ([b"chunked\t"], False),
        ([b"chunked;q=1"], False),
        ([b"chunked", b"identity"], False),
    ],
    ids=lambda v: repr(v) if isinstance(v, list) else None,
)
async def test_chunked_is_what_llhttp_decided_from_the_transfer_encoding(provider, fields, chunked) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Transfer-Encoding: %s\r\n" % field for field in fields) + b"\r\n"
    raw = await provider(answers(head + CHUNKS, then="wait" if chunked else "close"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.chunked, conn.content_length) == (chunked, None)
        # Chunked: decoded, and the connection kept. Otherwise: everything up to the close, as sent.
        assert await read_all(conn) == (b"hello" if chunked else CHUNKS)
        assert conn.complete
        assert conn.reusable is chunked


@pytest.mark.parametrize("coding", [b"chunked, identity", b"xchunked", b"chunked"])
@pytest.mark.parametrize("length_first", [False, True], ids=["length-after", "length-before"])
async def test_a_transfer_encoding_beside_a_content_length_is_invalid(provider, coding, length_first) -> None:
    """llhttp refuses the pair whatever the coding: the answer fails, its body never relayed."""
    fields = [b"Transfer-Encoding: " + coding + b"\r\n", b"Content-Length: 17\r\n"]
    if length_first:
        fields.reverse()
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\n" + b"".join(fields) + b"\r\n" + CHUNKS))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(InvalidAnswer, match=r"^malformed answer .*Transfer-Encoding"):
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert conn.closed
        assert conn.buffered == 0


async def test_a_content_length_with_trailing_spaces_is_the_length_llhttp_reads(provider) -> None:
    """llhttp reads `10 ` as 10: so must the connection, or a body cut short by a close would pass for a whole
    answer without a length."""
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 10  \r\n\r\nhello", then="close"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert conn.content_length == 10
        with pytest.raises(BrokenBody, match=r"^the provider closed the connection mid-answer$"):
            await read_all(conn)
        assert not conn.complete


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_an_answer_that_ends_the_connection_is_not_reusable(provider, answer) -> None:
    """The provider keeps its end open: only the answer's own words say the connection is done."""
    raw = await provider(answers(answer))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert await read_all(conn) == b"ok"
        assert conn.complete
        assert not conn.closed
        assert not conn.reusable


# ---- broken and hostile answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [b"O\x00K", b"O\x01K", b"OK\x1b[31m", b"O\x0bK", b"OK\x7f", b"OK\xe9", b"\x80\xff"],
    ids=["nul", "soh", "escape", "vertical-tab", "del", "latin-1", "obs-text"],
)
async def test_a_reason_phrase_that_is_not_plain_text_is_dropped(provider, reason) -> None:
    """llhttp lets such bytes through; aiohttp would refuse to write them in the client's status line."""
    raw = await provider(answers(b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: 2\r\n\r\nok"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.reason) == (200, "")
        assert await read_all(conn) == b"ok"
        assert conn.reusable


async def test_a_bad_reason_phrase_split_across_reads_is_dropped_too(provider) -> None:
    raw = await provider(answers(b"HTTP/1.1 404 Not", b" \x00Found\r\nContent-Length: 0\r\n\r\n"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert (conn.status, conn.reason) == (404, "")


@pytest.mark.parametrize("reason", ["OK", "Too Many Requests", "O\tK", "~!@#$%^&*()_+{}|:\"<>? `-=[]\\;',./"], ids=repr)
async def test_a_plain_text_reason_phrase_is_kept(provider, reason) -> None:
    raw = await provider(answers(b"HTTP/1.1 200 " + reason.encode() + b"\r\nContent-Length: 0\r\n\r\n"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert conn.reason == reason


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Name: v\r\n\r\n",
    ],
    ids=["protocol", "swapped", "four-digits", "not-http", "header-name"],
)
async def test_a_malformed_answer_is_invalid_and_the_connection_dropped(provider, answer) -> None:
    raw = await provider(answers(answer))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(InvalidAnswer, match=r"^malformed answer"):
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert conn.closed
        assert not conn.reusable
        # The client let go of the connection: the provider sees its end.
        async with asyncio.timeout(LIMIT):
            await raw.client_closed.wait()


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-Header-%03d: %s\r\n" % (n, b"v" * 100) for n in range(700)),
        b"X-Big: " + b"a" * (65 * 1024) + b"\r\n",
    ],
    ids=["many-headers", "one-header"],
)
async def test_a_response_head_over_64_kib_is_refused(provider, headers) -> None:
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 0\r\n\r\n"))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(InvalidAnswer, match=r"^the provider's response head is too large$"):
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert conn.closed


async def test_a_large_head_under_the_limit_is_read(provider) -> None:
    headers = b"".join(b"X-Header-%03d: %s\r\n" % (n, b"v" * 100) for n in range(500))  # about 57 KiB
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 2\r\n\r\nok"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert conn.status == 200
        assert len(conn.headers) == 501
        assert conn.headers["X-Header-499"] == "v" * 100
        assert await read_all(conn) == b"ok"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 " + b"O" * (100 * 1024) + b"\r\nContent-Length: 0\r\n\r\n",
        # The provider then stays silent, the header never ending.
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (1024 * 1024),
    ],
    ids=["100-kib-status-line", "1-mib-unterminated-header"],
)
async def test_a_head_over_64_kib_is_refused_however_it_is_made(provider, answer) -> None:
    raw = await provider(answers(answer))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(InvalidAnswer, match=r"^the provider's response head is too large$"):
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert conn.closed


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_provider_closing_mid_body_is_a_broken_body(provider, answer) -> None:
    raw = await provider(answers(answer, then="close"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        got = b""
        with pytest.raises(BrokenBody, match=r"^the provider closed the connection mid-answer$"):
            async with asyncio.timeout(LIMIT):
                while chunk := await conn.read(LIMIT):
                    got += chunk
        assert got == b"hello"
        assert not conn.complete
        assert not conn.reusable


async def test_a_provider_closing_before_any_byte_is_a_disconnect(provider) -> None:
    raw = await provider(answers(then="close"))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(Disconnected, match=r"^the provider closed the connection$"):
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert Disconnected.retryable
        assert conn.closed
    assert raw.heads == [REQUEST]


async def test_a_provider_closing_mid_head_is_not_a_retryable_disconnect(provider) -> None:
    """It had begun to answer, so the request reached it: not to be replayed like a connection found dead."""
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Le", then="close"))
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        with pytest.raises(InvalidAnswer, match=r"^the provider closed the connection mid-head$") as caught:
            async with asyncio.timeout(LIMIT):
                await conn.head()
        assert not caught.value.retryable


async def test_silence_mid_body_is_a_read_timeout(provider) -> None:
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        async with asyncio.timeout(LIMIT):
            assert await conn.read(0.2) == b"hello"
            with pytest.raises(ReadTimedOut, match=r"^the provider went silent mid-answer for longer than its limit$"):
                await conn.read(0.2)
        assert not conn.reusable


async def test_silence_before_the_head_is_a_head_timeout(provider) -> None:
    raw = await provider(answers())  # reads the request, then says nothing
    async with connection(raw.port) as conn:
        conn.send(REQUEST, None)
        until = asyncio.get_running_loop().time() + 0.2
        with pytest.raises(HeadTimedOut, match=r"^no answer from the provider within its limit$"):
            async with asyncio.timeout(LIMIT):
                await conn.head(until)
        assert conn.status == 0
    assert raw.heads == [REQUEST]


def endless(piece: bytes, pause: float) -> Script:
    """A script: a chunked answer whose chunks (`piece` each, every `pause` seconds) never end."""

    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(pause)

    return script


@pytest.mark.parametrize("idle", [None, 1.0], ids=["no-idle-limit", "idle-limit-never-reached"])
async def test_a_trickling_answer_is_cut_at_its_whole_limit(provider, idle) -> None:
    """A piece every 50 ms: never silent for the idle limit, yet the whole answer has 0.3 s."""
    raw = await provider(endless(b"data: x\n\n", 0.05))
    async with connection(raw.port) as conn:
        await exchange(conn)
        until = asyncio.get_running_loop().time() + 0.3
        got = b""
        # (Its message depends on whether the limit is seen while waiting or with bytes in hand.)
        with pytest.raises(AnswerTimedOut, match=r"^the answer took longer than its limit$"):
            async with asyncio.timeout(LIMIT):
                while True:
                    got += await conn.read(idle, until)
        assert got.startswith(b"data: x\n\n")
        assert not conn.reusable


async def test_a_fast_endless_answer_is_cut_at_its_whole_limit_too(provider) -> None:
    raw = await provider(endless(b"x" * 16384, 0))
    async with connection(raw.port) as conn:
        await exchange(conn)
        until = asyncio.get_running_loop().time() + 0.2
        await asyncio.sleep(0.4)  # the buffer fills (up to the back-pressure mark) and the limit passes
        assert conn.buffered > 0
        with pytest.raises(AnswerTimedOut, match=r"^the answer took longer than its limit$"):
            async with asyncio.timeout(2):
                while True:
                    assert await conn.read(None, until)
                    await asyncio.sleep(0.01)  # a client slower than the provider: the buffer never runs dry


async def test_a_reset_mid_way_through_a_close_delimited_body_is_a_broken_body(provider) -> None:
    reset = asyncio.Event()

    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
        await writer.drain()
        await reset.wait()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # close with linger 0: an RST, not a FIN

    raw = await provider(script)
    async with connection(raw.port) as conn:
        await exchange(conn)
        async with asyncio.timeout(LIMIT):
            assert await conn.read(LIMIT) == b"data: 1\n\n"
        reset.set()
        with pytest.raises(BrokenBody, match=r"^the provider closed the connection mid-answer$"):
            async with asyncio.timeout(LIMIT):
                await conn.read(LIMIT)


# ---- back-pressure ---------------------------------------------------------------------------------------------


async def test_a_client_that_reads_nothing_holds_a_bounded_buffer_then_gets_every_byte(provider) -> None:
    size = 4 * 1024 * 1024
    body = array("I", range(size // 4)).tobytes()  # counters: a byte out of order or lost shows
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, body))
    async with connection(raw.port) as conn:
        await exchange(conn)
        await wait_for(lambda: conn.buffered > 256 * 1024)
        # Plenty of time for the whole body to arrive if reading did not pause.
        await asyncio.sleep(0.3)
        assert conn.transport is not None
        assert not conn.transport.is_reading()
        assert conn.buffered < 1024 * 1024
        assert not conn.complete

        parts, most, resumed = [], 0, False
        async with asyncio.timeout(LIMIT * 2):
            while True:
                most = max(most, conn.buffered)
                chunk = await conn.read(LIMIT)
                if not chunk:
                    break
                parts.append(chunk)
                most = max(most, len(chunk))
                if conn.buffered <= 64 * 1024 and not conn.complete:
                    resumed = resumed or conn.transport.is_reading()
        assert b"".join(parts) == body
        assert most < 1024 * 1024
        assert resumed
        assert conn.complete
        assert conn.reusable


async def test_an_unsolicited_answer_after_a_complete_one_makes_the_connection_unusable(provider) -> None:
    sent = asyncio.Event()

    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await sent.wait()
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await raw.until_client_closes(reader)

    raw = await provider(script)
    async with connection(raw.port) as conn:
        await exchange(conn)
        assert await read_all(conn) == b"ok"
        assert conn.reusable
        sent.set()
        await wait_for(lambda: not conn.reusable, limit=2)
        assert conn.closed
        assert (conn.status, conn.reason) == (200, "OK")


async def test_an_unsolicited_answer_in_the_same_read_as_the_answer_is_caught_too(provider) -> None:
    raw = await provider(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n"))
    async with connection(raw.port) as conn:
        await exchange(conn)
        await wait_for(lambda: conn.complete)
        assert (conn.status, conn.reason) == (200, "OK")
        assert await read_all(conn) == b"ok"
        assert not conn.reusable
