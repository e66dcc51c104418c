"""The lean HTTP/1.1 client as a `Transport`: an upstream request becomes its request head here (request line,
Host, framing, the outbound proxy's target form and credentials), and nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl

from yarl import URL

from gateway.upstream.http1.connection import Connection
from gateway.upstream.http1.pool import Origin, Pool
from gateway.upstream.transport import Disconnected, Headers, InvalidHeader, StreamedBody, UpstreamRequest

__all__ = ["Http1Transport", "request_head"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Http1Transport:
    __slots__ = ("pool",)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @classmethod
    def create(
        cls,
        *,
        max_idle: int,
        max_idle_per_host: int,
        max_open: int,
        idle_timeout: float,
        tls_min_version: str,
    ) -> Http1Transport:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls_min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
        return cls(
            Pool(
                max_idle=max_idle,
                max_idle_per_host=max_idle_per_host,
                max_open=max_open,
                idle_timeout=idle_timeout,
                ssl_context=context,
            )
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.pool.loop

    async def send(self, request: UpstreamRequest, *, connect: float | None, head_by: float | None) -> Connection:
        pool = self.pool
        origin = pool.origin(request.url)
        head = request_head(request.method, request.url, origin, request.headers, request.body)
        head_only = request.method == "HEAD"
        body = request.body
        for _ in range(2):
            conn, reused = await pool.acquire(origin, connect)
            try:
                if isinstance(body, StreamedBody):
                    # The head's limit starts once the upload is out: a large one may take longer than the limit
                    # itself. While it goes out, a provider that stops reading for that long ends it.
                    window = None if head_by is None else max(head_by - self.loop.time(), 0.0)
                    conn.send(head, None, head_only=head_only)
                    await conn.send_stream(body, chunked=body.length is None, stall=window)
                    head_by = None if window is None else self.loop.time() + window
                else:
                    conn.send(head, body, head_only=head_only)
                await conn.head(head_by)
            except Disconnected as exc:
                pool.discard(conn)
                # Closed without a byte of answer, after the request was written: the provider may have read it
                # (and started the work). Sent again only when that is harmless; a reused connection (the provider
                # closed it as it idled) is then replaced at once, a new one is left to the retry policy.
                if not request.replayable:
                    exc.retryable = False
                    raise
                if reused:
                    continue
                raise
            except BaseException:
                pool.discard(conn)
                raise
            return conn
        raise Disconnected("the provider closed the connection")

    async def close(self) -> None:
        await self.pool.close()


def request_head(method: str, url: URL, origin: Origin, headers: Headers, body: bytes | StreamedBody | None) -> bytes:
    """The request line and headers as sent: Host and framing are the transport's, the rest as given."""
    start = f"{method} {origin.target_prefix}{url.raw_path_qs} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
    lines = b"".join([b"%s: %s\r\n" % pair for pair in headers])
    # Callers refuse line breaks in what a client sent, and the table's headers are checked at load: this is the
    # last guard that one header stays one line on the wire.
    if lines.count(b"\n") != len(headers) or lines.count(b"\r") != len(headers):
        raise InvalidHeader("a header holds a line break")
    if isinstance(body, StreamedBody):
        framing = b"Transfer-Encoding: chunked\r\n" if body.length is None else b"Content-Length: %d\r\n" % body.length
    elif body is not None or method in _BODY_METHODS:
        framing = b"Content-Length: %d\r\n" % (len(body) if body else 0)
    else:
        framing = b""
    proxy = f"Proxy-Authorization: {origin.proxy_authorization}\r\n".encode() if origin.proxy_authorization else b""
    return b"".join((start.encode("utf-8", "surrogateescape"), lines, proxy, framing, b"\r\n"))
