"""A provider that answers before it has read the whole request (an early 413 or 401) and keeps the connection
alive would take the rest of our body for the start of the next request on that connection. A connection whose
answer began while part of the request was still unwritten is therefore never reused: closed when released, at
once (the rest of the request is not flushed to a provider that may never read it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from gateway.upstream.call import fetch
from gateway.upstream.http1.client import Http1Transport, request_head
from gateway.upstream.http1.connection import Connection
from gateway.upstream.http1.pool import Pool
from gateway.upstream.transport import StreamedBody, UpstreamRequest
from tests.fakes.net import RawServer, wait_for

LIMIT = 5.0  # the bound on every wait; nothing here should come near it
# Far more than the loopback socket buffers hold: most of it is still the transport's to write when the provider
# answers on seeing the head.
LARGE = 16 * 1024 * 1024
TOO_LARGE = b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\ntoo big!"
FRESH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfresh"
DESYNCED = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\ndesynced"


class EarlyProvider(RawServer):
    """Keep-alive. A POST with a body over `small` bytes gets 413 as soon as its head is in, its body left unread:
    whatever comes next on the connection is read as the next request. A smaller POST is read whole, then gets
    413 all the same. A GET gets 200 `fresh`; anything else (bytes of a body taken for a request) 400 `desynced`.
    With `read_on`, it reads on after an early answer; without, it reads nothing more on that connection until
    `go_on` is set, then counts what still comes (`leftover`) until the client closes or resets it."""

    def __init__(self, small: int = 64 * 1024, read_on: bool = True) -> None:
        super().__init__()
        self.small = small
        self.read_on = read_on
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []  # (connection, start of what was read as a request)
        self.ended = asyncio.Event()  # a connection's handler ended (the client went)
        self.go_on = asyncio.Event()
        self.leftover = 0

    async def start(self) -> None:
        # Reading on, a head may be read across a whole left-over body: the reader's limit must hold it. Otherwise
        # the default limit, so that reading stops once 128 KiB wait unread (and the socket buffers fill).
        limit = 2 * LARGE if self.read_on else 64 * 1024
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=limit)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append((number, head[:16]))
                if head.startswith(b"POST "):
                    length = int(head.lower().partition(b"content-length:")[2].partition(b"\r\n")[0])
                    if length <= self.small:
                        await reader.readexactly(length)
                    writer.write(TOO_LARGE)
                    await writer.drain()
                    if length > self.small and not self.read_on:
                        await self.go_on.wait()
                        while chunk := await reader.read(1024 * 1024):
                            self.leftover += len(chunk)
                        return
                elif head.startswith(b"GET "):
                    writer.write(FRESH)
                else:
                    writer.write(DESYNCED)
                await writer.drain()
        finally:
            self.ended.set()


@pytest.fixture
async def transport() -> AsyncIterator[Http1Transport]:
    made = Http1Transport(Pool(max_idle=10, max_idle_per_host=10, proxies={}))
    yield made
    await made.close()
    await asyncio.sleep(0)


def url_of(server: RawServer, path: str) -> URL:
    return URL(f"http://127.0.0.1:{server.port}{path}")


async def call(transport: Http1Transport, request: UpstreamRequest) -> tuple[int, bytes]:
    async with asyncio.timeout(LIMIT):
        status, _, body = await fetch(transport, request, LIMIT, 1024)
    return status, body


async def test_an_early_answer_on_a_kept_connection_does_not_poison_the_next_request(servers, transport) -> None:
    provider = await servers(EarlyProvider())
    big = UpstreamRequest("POST", url_of(provider, "/v1/chat/completions"), [], b"a" * LARGE)
    assert await call(transport, big) == (413, b"too big!")
    # The next request must not follow the rest of that body on the same connection: the provider would read
    # those bytes as the start of it.
    after = UpstreamRequest("GET", url_of(provider, "/v1/models"), [], None)
    assert await call(transport, after) == (200, b"fresh")
    assert provider.connections == 2
    assert [(number, start[:4]) for number, start in provider.requests] == [(0, b"POST"), (1, b"GET ")]
    await wait_for(provider.ended.is_set)  # the first connection was closed


async def test_a_provider_that_reads_the_whole_body_before_answering_keeps_its_connection(servers, transport) -> None:
    provider = await servers(EarlyProvider())
    small = UpstreamRequest("POST", url_of(provider, "/v1/chat/completions"), [], b"a" * 1024)
    assert await call(transport, small) == (413, b"too big!")
    after = UpstreamRequest("GET", url_of(provider, "/v1/models"), [], None)
    assert await call(transport, after) == (200, b"fresh")
    assert provider.connections == 1


async def test_a_connection_answered_early_is_not_reusable_and_is_dropped_unflushed(servers) -> None:
    # The provider reads nothing after its answer: releasing the connection drops the rest of the body unsent
    # rather than leaving the socket open to flush it.
    provider = await servers(EarlyProvider(read_on=False))
    pool = Pool(max_idle=10, max_idle_per_host=10, proxies={})
    try:
        url = url_of(provider, "/v1/chat/completions")
        origin = pool.origin(url)
        async with asyncio.timeout(LIMIT):
            conn, _ = await pool.acquire(origin, LIMIT)
            body = b"a" * LARGE
            conn.send(request_head("POST", url, origin, (), body), body)
            await conn.head()
            assert conn.status == 413
            assert await conn.read(LIMIT) == b"too big!"
            assert await conn.read(LIMIT) == b""
        assert isinstance(conn, Connection)
        assert conn.complete and conn.keep_alive  # the provider means to keep it...
        assert conn.transport is not None
        unsent = conn.transport.get_write_buffer_size()
        assert unsent > 0  # ...with part of our body still unwritten
        assert not conn.reusable
        conn.release()
        assert (pool.idle_connections, pool.open_connections) == (0, 0)
        provider.go_on.set()
        await wait_for(provider.ended.is_set)
        # What was still ours to write never reached it: dropped, not flushed (a flush would deliver all of LARGE).
        assert provider.leftover <= LARGE - unsent
    finally:
        await pool.close()


async def test_a_streamed_body_stops_at_an_early_answer_and_its_connection_is_not_reused(servers, transport) -> None:
    # An upload the provider refuses on seeing its head: the gateway stops taking chunks from the client (the
    # provider reads no more) and relays the answer; the connection is never reused.
    provider = await servers(EarlyProvider(read_on=False))
    taken = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal taken
        for _ in range(LARGE // 65536):
            taken += 65536
            yield b"a" * 65536

    body = StreamedBody(chunks(), LARGE)
    upload = UpstreamRequest("POST", url_of(provider, "/v1/audio/transcriptions"), [], body)
    assert await call(transport, upload) == (413, b"too big!")
    assert body.started and not upload.replayable
    assert taken < LARGE // 2  # stopped at the answer, not after the whole upload
    after = UpstreamRequest("GET", url_of(provider, "/v1/models"), [], None)
    provider.go_on.set()
    assert await call(transport, after) == (200, b"fresh")
    assert provider.connections == 2


async def test_a_streamed_body_without_a_length_goes_chunked(servers, transport) -> None:
    class Echo(RawServer):
        async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readuntil(b"0\r\n\r\n")
            self.seen = head, body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    provider = await servers(Echo())

    async def chunks() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    upload = UpstreamRequest("POST", url_of(provider, "/up"), [], StreamedBody(chunks(), None))
    assert await call(transport, upload) == (200, b"ok")
    head, body = provider.seen
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head and b"Content-Length" not in head
    assert body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
