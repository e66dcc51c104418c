"""Helpers of the resilience tests: a gateway that keeps every request's Exchange, fake providers built from one
handler, SSE events, raw-socket clients and log capture."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.exchange import EXCHANGE, Exchange
from tests.fakes.providers import FakeProvider, Handler, entry, table_of

ROOT = Path(__file__).resolve().parents[2]

# Every limit small, so a test that relies on one firing ends quickly; retries off unless a test turns them on.
TINY = Settings(
    client_timeout=0.3,
    connect_timeout=0.3,
    response_header_timeout=0.3,
    stream_idle_timeout=0.3,
    read_timeout=0.3,
    write_timeout=0.3,
    max_retries=0,
    retry_backoff=0.01,
    retry_backoff_max=0.05,
)


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def port(self) -> int:
        port = self.client.port
        assert port is not None
        return port

    async def settled(self, count: int = 1) -> list[Exchange]:
        """The first `count` finished exchanges, waiting (bounded) for handlers still ending."""
        for _ in range(500):
            if len(self.exchanges) >= count:
                return self.exchanges
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {len(self.exchanges)} of {count} requests ended")


async def start_gateway(
    aiohttp_client: Any,
    table: ProviderTable,
    settings: Settings = TINY,
    server_kwargs: dict[str, Any] | None = None,
    **changes: Any,
) -> Gateway:
    """The gateway app on a test server; each request's Exchange is kept once its handler has ended."""
    app = create_app(replace(settings, **changes), table)
    gateway_exchanges: list[Exchange] = []

    @web.middleware
    async def keep(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            gateway_exchanges.append(request[EXCHANGE])

    app.middlewares.append(keep)
    server = TestServer(app)
    # Runner options (as server.py sets them) go to start_server; TestServer itself does not pass them on.
    await server.start_server(**(server_kwargs or {}))
    client = await aiohttp_client(server)
    return Gateway(client, gateway_exchanges)


def one_provider(provider: FakeProvider | str, **extra: Any) -> ProviderTable:
    """A table of one provider, `p`, at a fake provider or a URL."""
    return table_of(entry("p", provider if isinstance(provider, str) else provider.url, **extra))


@dataclass
class Raw:
    """A raw TCP client: bytes exactly as given, read with a time limit."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, limit: float = 10) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout=limit)

    async def head(self, limit: float = 10) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout=limit)

    async def answer(self, limit: float = 10) -> bytes:
        """One response with a Content-Length: its head and body, without waiting for the connection to close."""
        head = await self.head(limit)
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(self.reader.readexactly(length), timeout=limit)


@contextlib.asynccontextmanager
async def raw_connection(port: int, receive_buffer: int | None = None) -> AsyncIterator[Raw]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # A small window, so a client that stops reading stalls the server's writes quickly.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@contextlib.contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


def events_named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


async def wait_for(condition: Any, limit: float = 5.0) -> None:
    """Poll `condition()` until true (bounded); fail the test when it never becomes true."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")
