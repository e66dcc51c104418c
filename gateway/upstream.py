"""The only user of the outbound HTTP client: the pooled session, transport errors mapped to 502/504 at this one
boundary, retries while the client has nothing yet, and the relay that copies the provider's answer to the
client chunk by chunk, untouched. The limits and retry rules come precomputed from `limits.py`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .errors import UpstreamError, UpstreamTimeout
from .exchange import Exchange
from .limits import NO_RETRY, RETRY_STATUSES, Limits, RetryPolicy
from .outbound import HOP_BY_HOP
from .pool import IdleCappedConnector
from .settings import Settings
from .write_guard import WriteGuard

__all__ = ["SESSION", "Limits", "make_session", "relay", "session_context"]

log = structlog.get_logger("gateway.upstream")

SESSION = web.AppKey("session", aiohttp.ClientSession)

# Framing is redone by the gateway's own server; everything else the provider says goes back as it is.
_NOT_RELAYED = HOP_BY_HOP | {"content-length"}
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def make_session(settings: Settings) -> aiohttp.ClientSession:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if settings.tls_min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    connector = IdleCappedConnector(
        max_idle=settings.max_idle_conns,
        max_idle_per_host=settings.max_idle_conns_per_host,
        limit=settings.max_conns,
        limit_per_host=0,
        keepalive_timeout=settings.idle_conn_timeout,
        ssl=context,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # Reading the proxy settings costs time on every request: only when the operator set one.
        trust_env=any(os.environ.get(name) for name in _PROXY_ENV),
        skip_auto_headers=("User-Agent",),
        timeout=aiohttp.ClientTimeout(total=None),
        # One session serves every client: a provider's cookie must never ride along on someone else's call.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def session_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = session = make_session(settings)
        yield
        await session.close()

    return context


async def relay(
    request: web.Request,
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: CIMultiDict[str],
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
    loop = asyncio.get_running_loop()
    started = loop.time()
    whole_end = None if limits.whole is None else started + limits.whole
    try:
        async with asyncio.timeout(None) as deadline:
            upstream = await _answer(session, method, url, headers, body, limits, exchange, retry, deadline, started)
            deadline.reschedule(whole_end)
            async with upstream:
                exchange.upstream_status = upstream.status
                if limits.idle is not None and limits.timeout.sock_read != limits.idle:
                    _narrow_read_timeout(upstream, limits.idle)
                response = _start_response(upstream, exchange)
                await response.prepare(request)
                guard = (
                    None if write_timeout is None else WriteGuard(request, write_timeout, partial(_stalled, exchange))
                )
                try:
                    await _copy_body(upstream, response, exchange, url)
                finally:
                    if guard is not None:
                        guard.stop()
                await response.write_eof()
                return response
    except aiohttp.ServerTimeoutError as exc:
        # aiohttp's own socket limits, before the head: no connection in time, or silence while waiting.
        exchange.error_type = "timeout"
        what = "could not connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "did not answer"
        raise UpstreamTimeout(f"the provider {what} in time") from None
    except TimeoutError:
        exchange.error_type = "timeout"
        if response is not None and response.prepared:
            log.warning("upstream answer exceeded its time limit", url=_loggable(url), limit=limits.whole)
            response.force_close()
            return response
        raise UpstreamTimeout(f"the provider did not answer within {limits.headers:g}s") from None
    except (aiohttp.ClientError, ConnectionResetError) as exc:
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
        raise UpstreamError(f"the provider could not be reached: {_describe(exc)}") from None
    except asyncio.CancelledError:
        exchange.client_disconnected = True
        raise


# Failures where the provider cannot have started on the request: retried while nothing reached the client.
# A certificate or TLS failure is not transient and is not retried.
_RETRYABLE_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)


async def _answer(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes | None,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy,
    deadline: asyncio.Timeout,
    started: float,
) -> aiohttp.ClientResponse:
    """The provider's response head, after as many retries as the policy and the time budget allow."""
    loop = asyncio.get_running_loop()
    whole_end = None if limits.whole is None else started + limits.whole
    budget_end = started + limits.budget
    while True:
        now = loop.time()
        deadline.reschedule(now + limits.headers if whole_end is None else min(now + limits.headers, whole_end))
        try:
            upstream = await session.request(
                method, url, headers=headers, data=body, timeout=limits.timeout, allow_redirects=False
            )
        except aiohttp.ClientSSLError:
            raise
        except _RETRYABLE_ERRORS as exc:
            wait = retry.delay(exchange.retries)
            if wait is None or loop.time() + wait >= budget_end:
                raise
            reason = _describe(exc)
        else:
            if upstream.status not in RETRY_STATUSES:
                return upstream
            wait = retry.delay(exchange.retries, upstream.headers)
            if wait is None or loop.time() + wait >= budget_end:
                # Out of retries or of time: the provider's own answer goes to the client, Retry-After and all.
                return upstream
            reason = f"status {upstream.status}"
            exchange.upstream_status = upstream.status
            upstream.release()
        exchange.retries += 1
        log.info("retrying upstream call", provider=exchange.provider, retry=exchange.retries, reason=reason, wait=wait)
        deadline.reschedule(whole_end)
        await asyncio.sleep(wait)


def _stalled(exchange: Exchange) -> None:
    log.warning("client stopped reading; ending the exchange", provider=exchange.provider)
    exchange.error_type = "write_timeout"


def _narrow_read_timeout(upstream: aiohttp.ClientResponse, idle: float) -> None:
    """The head is in: from now on only a silence of `idle` ends the stream (see Limits.build)."""
    connection = upstream.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = idle


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _copy_body(
    upstream: aiohttp.ClientResponse, response: web.StreamResponse, exchange: Exchange, url: URL
) -> None:
    """The per-chunk loop: write, count, let the usage scanner look. Nothing else happens per chunk."""
    scanner = exchange.scanner
    sent = 0
    try:
        async for chunk in upstream.content.iter_any():
            if not sent:
                exchange.first_chunk_at = time.perf_counter()
            await response.write(chunk)
            sent += len(chunk)
            if scanner is not None:
                scanner.feed(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError) as exc:
        # The provider broke off or went silent mid-answer: end what the client has cleanly.
        log.warning("upstream body ended early", url=_loggable(url), error=type(exc).__name__)
        exchange.error_type = "truncated"
        if response.content_length is not None:
            response.force_close()
    finally:
        exchange.bytes_out = sent
        if scanner is not None:
            scanner.finish()


def _start_response(upstream: aiohttp.ClientResponse, exchange: Exchange) -> web.StreamResponse:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
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
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if "transfer-encoding" not in upstream.headers and upstream.content_length is not None:
        response.content_length = upstream.content_length
    if upstream.content_type == "text/event-stream":
        # Tell any buffering proxy in front of us (nginx) to pass events on at once.
        response.headers.setdefault("X-Accel-Buffering", "no")
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _describe(exc: BaseException) -> str:
    """A transport error as text that names the kind of failure and never a URL (which may hold a key)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        return f"cannot connect ({os.strerror(code) if code else type(exc.os_error).__name__})"
    return type(exc).__name__


def _loggable(url: URL) -> str:
    """The URL without its query string, where a provider key may travel."""
    return str(url.with_query(None))
