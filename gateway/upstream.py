"""The only user of the outbound HTTP client: the pooled session, time limits, transport errors mapped to 502/504
at this one boundary, and the relay that copies the provider's answer to the client chunk by chunk, untouched.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .errors import UpstreamError, UpstreamTimeout
from .exchange import Exchange
from .outbound import HOP_BY_HOP
from .pool import IdleCappedConnector
from .settings import Settings

log = structlog.get_logger("gateway.upstream")

SESSION = web.AppKey("session", aiohttp.ClientSession)

# Framing is redone by the gateway's own server; everything else the provider says goes back as it is.
_NOT_RELAYED = HOP_BY_HOP | {"content-length"}
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True, slots=True)
class Limits:
    """Time limits of one upstream call. `headers` bounds the wait for the response head; `whole` (when set)
    bounds the call from start to last byte; `idle` (when set) bounds each silence while the body flows."""

    headers: float
    whole: float | None
    timeout: aiohttp.ClientTimeout

    @classmethod
    def for_call(cls, settings: Settings, *, stream: bool) -> Limits:
        if stream:
            # A stream that keeps sending is never cut: only silences are limited.
            return cls(
                headers=settings.response_header_timeout,
                whole=None,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=settings.connect_timeout, sock_read=settings.stream_idle_timeout
                ),
            )
        return cls(
            headers=settings.client_timeout,
            whole=settings.client_timeout,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout, sock_read=None),
        )

    @classmethod
    def for_proxy(cls, settings: Settings) -> Limits:
        """A raw call may be a slow whole answer or a stream: wait long for the head, then limit silences."""
        return cls(
            headers=settings.client_timeout,
            whole=None,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.stream_idle_timeout
            ),
        )


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
) -> web.StreamResponse:
    """Send one request upstream and copy the answer back as it arrives: status, headers and bytes unchanged."""
    response: web.StreamResponse | None = None
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(limits.headers) as deadline:
            upstream = await session.request(
                method, url, headers=headers, data=body, timeout=limits.timeout, allow_redirects=False
            )
            deadline.reschedule(None if limits.whole is None else started + limits.whole)
            async with upstream:
                exchange.upstream_status = upstream.status
                response = _start_response(upstream)
                await response.prepare(request)
                await _copy_body(upstream, response, exchange, url)
                await response.write_eof()
                return response
    except TimeoutError:
        if response is not None and response.prepared:
            log.warning("upstream answer exceeded its time limit", url=_loggable(url))
            exchange.error_type = "timeout"
            response.force_close()
            return response
        exchange.error_type = "timeout"
        raise UpstreamTimeout(f"the provider did not answer within {limits.headers:g}s") from None
    except aiohttp.ServerTimeoutError:
        exchange.error_type = "timeout"
        raise UpstreamTimeout("the provider did not answer in time") from None
    except aiohttp.ClientConnectionResetError:
        # The client went away; leaving the `async with` above has already closed the upstream request.
        exchange.client_disconnected = True
        if response is not None and response.prepared:
            return response
        raise
    except aiohttp.ClientError as exc:
        exchange.error_type = "connect"
        if response is not None and response.prepared:
            response.force_close()
            return response
        raise UpstreamError(f"the provider could not be reached: {_describe(exc)}") from None
    except asyncio.CancelledError:
        exchange.client_disconnected = True
        raise


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


def _start_response(upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in _NOT_RELAYED:
            headers.add(name, value)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if "transfer-encoding" not in upstream.headers and upstream.content_length is not None:
        response.content_length = upstream.content_length
    if upstream.content_type == "text/event-stream":
        # Tell any buffering proxy in front of us (nginx) to pass events on at once.
        response.headers.setdefault("X-Accel-Buffering", "no")
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _describe(exc: aiohttp.ClientError) -> str:
    """A transport error as text that names the kind of failure and never a URL (which may hold a key)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        return f"cannot connect ({os.strerror(code) if code else type(exc.os_error).__name__})"
    return type(exc).__name__


def _loggable(url: URL) -> str:
    """The URL without its query string, where a provider key may travel."""
    return str(url.with_query(None))
