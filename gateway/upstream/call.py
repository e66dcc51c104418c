"""The only user of the outbound HTTP client: the pooled session, transport errors mapped to 502/504 at this one
boundary, retries while the client has nothing yet, and the relay that copies the provider's answer to the
client chunk by chunk, untouched. The limits and retry rules come precomputed from `limits.py`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.config.settings import Settings
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.exchange import Exchange
from gateway.upstream.http1.connection import (
    AnswerTimedOut,
    Connection,
    ConnectTimedOut,
    Disconnected,
    HeadTimedOut,
    TLSFailed,
    TransportError,
)
from gateway.upstream.http1.pool import Origin, Pool
from gateway.upstream.outbound import HOP_BY_HOP
from gateway.upstream.timeouts import NO_RETRY, RETRY_STATUSES, Limits, RetryPolicy
from gateway.upstream.write_guard import WriteGuard

__all__ = ["POOL", "Limits", "fetch", "make_pool", "pool_context", "relay"]

log = structlog.get_logger("gateway.upstream")

POOL = web.AppKey("pool", Pool)

# Framing is redone by the gateway's own server; everything else the provider says goes back as it is.
_NOT_RELAYED = HOP_BY_HOP | {"content-length"}
# A whole answer that is already in when its head is read goes out in one write, up to this size; beyond it,
# or when more is to come, it is streamed (and the write timeout watches a client that stops reading).
_ONE_WRITE = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def make_pool(settings: Settings) -> Pool:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if settings.tls_min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    return Pool(
        max_idle=settings.max_idle_conns,
        max_idle_per_host=settings.max_idle_conns_per_host,
        max_open=settings.max_conns,
        idle_timeout=settings.idle_conn_timeout,
        ssl_context=context,
    )


def pool_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = pool = make_pool(settings)
        yield
        await pool.close()

    return context


async def relay(
    request: web.Request,
    pool: Pool,
    method: str,
    url: URL,
    header_lines: bytes,
    body: bytes | None,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy = NO_RETRY,
    write_timeout: float | None = None,
) -> web.StreamResponse:
    """Send one request upstream and copy the answer back as it arrives: status, headers and bytes unchanged.

    Failed connections and 429/502/503/504 answers are retried by `retry` while nothing has reached the client;
    `write_timeout` ends the exchange when the client stops reading for that long.
    """
    response: web.StreamResponse | None = None
    conn: Connection | None = None
    started = pool.loop.time()
    whole_end = None if limits.whole is None else started + limits.whole
    try:
        conn = await _answer(pool, method, url, header_lines, body, limits, exchange, retry, started, whole_end)
        exchange.upstream_status = conn.status
        if conn.complete and conn.buffered <= _ONE_WRITE:
            response = _whole_response(conn, exchange)
        else:
            response = _start_response(conn, exchange)
            await response.prepare(request)
            guard = None if write_timeout is None else WriteGuard(request, write_timeout, partial(_stalled, exchange))
            try:
                await _copy_body(conn, response, exchange, url, limits, whole_end)
            finally:
                if guard is not None:
                    guard.stop()
            await response.write_eof()
        pool.release(conn)
        conn = None
        return response
    except HeadTimedOut:
        exchange.error_type = "timeout"
        raise UpstreamTimeout(f"the provider did not answer within {limits.headers:g}s") from None
    except ConnectTimedOut:
        exchange.error_type = "timeout"
        raise UpstreamTimeout("the provider could not connect in time") from None
    except TransportError as exc:
        exchange.error_type = "connect"
        raise UpstreamError(f"the provider could not be reached: {exc}") from None
    except ConnectionError as exc:
        if response is not None and response.prepared:
            # Mid-answer: either the client went away (its write failed) or the provider broke off.
            if _client_gone(request):
                exchange.client_disconnected = True
            else:
                log.warning("upstream answer broke off", url=_loggable(url), error=type(exc).__name__)
                exchange.error_type = "truncated"
                response.force_close()
            return response
        exchange.error_type = "connect"
        raise UpstreamError(f"the provider could not be reached: {type(exc).__name__}") from None
    except asyncio.CancelledError:
        exchange.client_disconnected = True
        raise
    finally:
        if conn is not None:
            pool.discard(conn)


async def _answer(
    pool: Pool,
    method: str,
    url: URL,
    header_lines: bytes,
    body: bytes | None,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy,
    started: float,
    whole_end: float | None,
) -> Connection:
    """The provider's response head, after as many retries as the policy and the time budget allow."""
    loop = pool.loop
    budget_end = started + limits.budget
    origin = pool.origin(url)
    head = request_head(method, url, origin, header_lines, body)
    while True:
        now = loop.time()
        head_by = now + limits.headers if whole_end is None else min(now + limits.headers, whole_end)
        try:
            conn = await _exchange(pool, origin, head, body, limits.connect, head_by, method == "HEAD")
        except TLSFailed:
            raise
        except TransportError as exc:
            if not exc.retryable:
                raise
            wait = retry.delay(exchange.retries)
            if wait is None or loop.time() + wait >= budget_end:
                raise
            reason = str(exc)
        else:
            if conn.status not in RETRY_STATUSES:
                return conn
            wait = retry.delay(exchange.retries, conn.headers)
            if wait is None or loop.time() + wait >= budget_end:
                # Out of retries or of time: the provider's own answer goes to the client, Retry-After and all.
                return conn
            reason = f"status {conn.status}"
            exchange.upstream_status = conn.status
            pool.discard(conn)
        exchange.retries += 1
        log.info("retrying upstream call", provider=exchange.provider, retry=exchange.retries, reason=reason, wait=wait)
        await asyncio.sleep(wait)


async def _exchange(
    pool: Pool,
    origin: Origin,
    head: bytes,
    body: bytes | None,
    connect: float | None,
    head_by: float | None,
    head_only: bool,
) -> Connection:
    """One attempt: a connection, the request, the answer's head. A pooled connection the provider had already
    closed is replaced once at no cost to the retry budget: the request never reached anyone."""
    for _ in range(2):
        conn, reused = await pool.acquire(origin, connect)
        try:
            conn.send(head, body, head_only=head_only)
            await conn.head(head_by)
        except Disconnected:
            pool.discard(conn)
            if reused:
                continue
            raise
        except BaseException:
            pool.discard(conn)
            raise
        return conn
    raise Disconnected("the provider closed the connection")


def request_head(method: str, url: URL, origin: Origin, header_lines: bytes, body: bytes | None) -> bytes:
    """The request line and headers, as sent: Host and framing are the gateway's, the rest as translated
    (`header_lines`: complete lines, from outbound.upstream_headers)."""
    start = f"{method} {origin.target_prefix}{url.raw_path_qs} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
    framing = (
        b"Content-Length: %d\r\n" % (len(body) if body else 0) if body is not None or method in _BODY_METHODS else b""
    )
    proxy = f"Proxy-Authorization: {origin.proxy_authorization}\r\n".encode() if origin.proxy_authorization else b""
    return b"".join((start.encode("utf-8", "surrogateescape"), header_lines, proxy, framing, b"\r\n"))


async def fetch(
    pool: Pool, method: str, url: URL, header_lines: bytes, connect: float | None, limit: int
) -> tuple[int, CIMultiDict[str], bytes]:
    """A small whole answer (status, headers, at most `limit` + 1 bytes of body); the caller bounds the time."""
    origin = pool.origin(url)
    head = request_head(method, url, origin, header_lines, None)
    conn = await _exchange(pool, origin, head, None, connect, None, False)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = await conn.read(None)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        status, answer_headers = conn.status, conn.headers
    except BaseException:
        pool.discard(conn)
        raise
    pool.release(conn)
    return status, answer_headers, b"".join(chunks)


def _stalled(exchange: Exchange) -> None:
    log.warning("client stopped reading; ending the exchange", provider=exchange.provider)
    exchange.error_type = "write_timeout"


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _copy_body(
    conn: Connection,
    response: web.StreamResponse,
    exchange: Exchange,
    url: URL,
    limits: Limits,
    whole_end: float | None,
) -> None:
    """The per-chunk loop: write, count, let the usage scanner look. Nothing else happens per chunk."""
    scanner = exchange.scanner
    idle = limits.idle
    sent = 0
    try:
        while chunk := await conn.read(idle, whole_end):
            if not sent:
                exchange.first_chunk_at = time.perf_counter()
            await response.write(chunk)
            sent += len(chunk)
            if scanner is not None:
                scanner.feed(chunk)
    except AnswerTimedOut:
        log.warning("upstream answer exceeded its time limit", url=_loggable(url), limit=limits.whole)
        exchange.error_type = "timeout"
        response.force_close()
    except TransportError as exc:
        # The provider broke off or went silent mid-answer: end what the client has cleanly.
        log.warning("upstream body ended early", url=_loggable(url), error=type(exc).__name__)
        exchange.error_type = "truncated"
        if response.content_length is not None:
            response.force_close()
    finally:
        exchange.bytes_out = sent
        if scanner is not None:
            scanner.finish()


def _relayed_headers(conn: Connection, exchange: Exchange) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in conn.header_items:
        lowered = name.lower()
        if lowered == "x-request-id":
            # The provider's id stays visible under its own name; X-Request-ID is the gateway's.
            exchange.upstream_request_id = value[:128]
            headers.add("X-Upstream-Request-ID", value)
        elif lowered not in _NOT_RELAYED:
            headers.add(name, value)
    if exchange.request_id:
        # Set before prepare(): a streamed answer's headers cannot change later.
        headers["X-Request-ID"] = exchange.request_id
    return headers


def _whole_response(conn: Connection, exchange: Exchange) -> web.Response:
    """An answer that came in whole with its head: one write, headers and body together."""
    body = conn.take_buffered()
    if body:
        exchange.first_chunk_at = time.perf_counter()
    exchange.bytes_out = len(body)
    if exchange.scanner is not None:
        exchange.scanner.whole(body)
    return web.Response(
        status=conn.status, reason=conn.reason or None, headers=_relayed_headers(conn, exchange), body=body
    )


def _start_response(conn: Connection, exchange: Exchange) -> web.StreamResponse:
    headers = _relayed_headers(conn, exchange)
    response = web.StreamResponse(status=conn.status, reason=conn.reason or None, headers=headers)
    if conn.content_length is not None and not conn.chunked:
        response.content_length = conn.content_length
    if conn.content_type == "text/event-stream":
        # Tell any buffering proxy in front of us (nginx) to pass events on at once.
        response.headers.setdefault("X-Accel-Buffering", "no")
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _loggable(url: URL) -> str:
    """The URL without its query string, where a provider key may travel."""
    return str(url.with_query(None))
