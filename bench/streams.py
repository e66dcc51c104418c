"""The stream client of the benchmark: raw HTTP/1.1 over asyncio, timing each SSE event as it arrives.

It parses only what it needs (status, chunked or sized body, event boundaries) so that its own cost stays small
and identical for every target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

EVENT_END = b"\n\n"
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class StreamResult:
    status: int = 0
    events: int = 0  # events before `data: [DONE]`
    done: bool = False
    ttfb: float = 0.0  # seconds from the request's last byte to the first event
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive events
    error: str = ""


def request_bytes(port: int, path: str, body: bytes, mode: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer bench-client-key\r\nX-Bench: {mode}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body_pieces(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """Yield the body as it arrives, de-chunked."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    else:
        left = int(headers.get("content-length", "0"))
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                raise ConnectionError("body cut short")
            left -= len(data)
            yield data


async def one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, result: StreamResult
) -> bool:
    """Send one request on an open connection and time its events; True if the connection can be reused."""
    writer.write(request)
    await writer.drain()
    sent = time.perf_counter()
    result.status, headers = await _read_head(reader)
    pending = b""
    last = 0.0
    async for data in _body_pieces(reader, headers):
        now = time.perf_counter()
        pending += data
        while (cut := pending.find(EVENT_END)) >= 0:
            event, pending = pending[: cut + 2], pending[cut + 2 :]
            if event == DONE:
                result.done = True
                continue
            if result.events == 0:
                result.ttfb = now - sent
            else:
                result.gaps.append(now - last)
            last = now
            result.events += 1
    return headers.get("connection", "").lower() != "close"


async def sequential(port: int, path: str, body: bytes, mode: str, count: int, timeout: float) -> list[StreamResult]:
    """`count` streams one after the other on one keep-alive connection (concurrency 1)."""
    request = request_bytes(port, path, body, mode)
    results: list[StreamResult] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            for _ in range(count):
                result = StreamResult()
                results.append(result)
                if not await one_stream(reader, writer, request, result):
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        if results:
            results[-1].error = type(exc).__name__
    finally:
        writer.close()
    return results


async def concurrent(
    port: int, path: str, body: bytes, mode: str, count: int, ramp: float, timeout: float
) -> list[StreamResult]:
    """`count` streams at once, each on its own connection; connections are opened over `ramp` seconds."""
    request = request_bytes(port, path, body, mode)

    async def run(index: int, result: StreamResult) -> None:
        await asyncio.sleep(ramp * index / count)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await one_stream(reader, writer, request, result)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.error = type(exc).__name__
        finally:
            if writer is not None:
                writer.close()

    results = [StreamResult() for _ in range(count)]
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            for index, result in enumerate(results):
                group.create_task(run(index, result))
    except TimeoutError:
        for result in results:
            if not result.done and not result.error:
                result.error = "timeout"
    return results
