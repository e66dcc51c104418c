"""Network helpers: loopback ports, waiting for a listener, raw-socket clients and a raw asyncio server (for the
tests that need exact bytes on the wire), and a bounded poll."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    """A loopback port free at the time of asking (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    """Block until `process` accepts on `port`; fail if it exits first or nothing listens within `limit`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {limit}s")


async def raw_http(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side URL normalising) and return (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


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


async def wait_for(condition: Any, limit: float = 5.0) -> None:
    """Poll `condition()` until true (bounded); fail the test when it never becomes true."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


class RawServer:
    """An asyncio server on 127.0.0.1 whose connection handlers are all ended when it stops."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stopped with the test: end quietly (a cancelled handler task is logged as an error on 3.11)
        finally:
            writer.close()


async def read_until_cut(response: Any, limit: float = 5.0) -> tuple[bytes, bool]:
    """An answer's body as far as it came, and whether the connection was cut before its end (a truncated answer
    must never look whole: no terminating chunk, no clean close)."""
    import aiohttp

    parts: list[bytes] = []
    try:
        async with asyncio.timeout(limit):
            async for part in response.content.iter_any():
                parts.append(part)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return b"".join(parts), True
    return b"".join(parts), False
