"""The call to a provider: attempts and retries while the client has nothing yet, transport errors turned into the
gateway's at this one boundary, and the relay that copies the provider's answer to the client chunk by chunk,
untouched. Time limits and retry rules come precomputed from `timeouts.py`; bytes on the wire are the transport's.

Two exceptions to "untouched". A route of another dialect (`translate`) gets the answer reshaped by that dialect's
translators: a whole answer is read (bounded) and rewritten in one piece, an event stream event by event as it
passes. And a provider whose key rides in the URL query (`auth_type: query`) may echo that URL,
in a redirect's Location or in an error body. Its key is replaced (`scrub.py`) in every relayed header and in
every non-2xx body, which is read whole (bounded) for that; 2xx bodies pass as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Protocol

import structlog
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway.config.settings import Settings
from gateway.errors import UpstreamError
from gateway.exchange import Exchange
from gateway.upstream.http1.client import Http1Transport
from gateway.upstream.outbound import HOP_BY_HOP
from gateway.upstream.relayed import RelayedStream, RelayedWhole
from gateway.upstream.scrub import SCRUBBED_MAX, Unscrubbable, scrubbed_body, scrubbed_head
from gateway.upstream.timeouts import NO_RETRY, RETRY_STATUSES, Limits, RetryPolicy, retry_after
from gateway.upstream.transport import (
    AnswerTimedOut,
    HeadTimedOut,
    InvalidAnswer,
    InvalidHeader,
    Response,
    TimedOut,
    TLSFailed,
    Transport,
    TransportError,
    UpstreamRequest,
    gateway_error,
)
from gateway.upstream.write_guard import WriteGuard

__all__ = ["TRANSPORT", "Limits", "StreamEdit", "Translate", "fetch", "open_answer", "relay", "transport_context"]

log = structlog.get_logger("gateway.upstream")

TRANSPORT = web.AppKey("transport", Transport)

# Framing is redone by the gateway's own server; everything else the provider says goes back as it is.
_NOT_RELAYED = HOP_BY_HOP | {"content-length"}
# A translated whole answer is read up to this size (images in base64 are the large ones); beyond it, a 502.
TRANSLATED_MAX = 32 * 1024 * 1024
# A whole answer that is already in when its head is read goes out in one write, up to this size; beyond it,
# or when more is to come, it is streamed (and the write timeout watches a client that stops reading).
_ONE_WRITE = 64 * 1024


class StreamEdit(Protocol):
    """Takes out of an answer what the gateway itself asked the provider for and the client did not (a dialect's
    business); every other byte passes unchanged and at once."""

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Translate(Protocol):
    """A provider's answer in the route's dialect instead of its own (a dialect's business): `whole` rewrites a
    whole answer, any status, into (the client's status, content type, body); `stream` gives the edit that
    rewrites a 2xx event stream event by event, never holding more than an unfinished event."""

    def whole(self, status: int, body: bytes) -> tuple[int, str, bytes]: ...

    def stream(self) -> StreamEdit: ...


def make_transport(settings: Settings) -> Transport:
    return Http1Transport.create(
        max_idle=settings.max_idle_conns,
        max_idle_per_host=settings.max_idle_conns_per_host,
        max_open=settings.max_conns,
        idle_timeout=settings.idle_conn_timeout,
        tls_min_version=settings.tls_min_version,
    )


def transport_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        app[TRANSPORT] = transport = make_transport(settings)
        yield
        await transport.close()

    return context


async def relay(
    request: web.Request,
    transport: Transport,
    upstream: UpstreamRequest,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy = NO_RETRY,
    write_timeout: float | None = None,
    edit: StreamEdit | None = None,
    secret: bytes | None = None,
    translate: Translate | None = None,
    answer: Response | None = None,
    started: float | None = None,
) -> web.StreamResponse:
    """Send one request upstream and copy the answer back as it arrives: status, headers and bytes unchanged.

    Failed connections and 429/502/503/504 answers are retried by `retry` while nothing has reached the client;
    `write_timeout` ends the exchange when the client stops reading for that long. `edit`, when given, removes
    from the body what the gateway asked for on its own account (the usage scanner still sees every byte).
    `secret`, the provider's key when it travels in the URL query (`query_secret`), is scrubbed from the headers and
    from a non-2xx body, which is then read whole first; None for every other provider. `translate`, for a route
    of another dialect, reshapes the answer: an event stream as it passes, anything else read whole first.

    `answer`, when given, is a head `open_answer` already got (at `started`): a caller that may still turn to
    another provider when the head is a failure (a model group's fallback) asks for it first, then relays it here.
    """
    response: web.StreamResponse | None = None
    if started is None:
        started = transport.loop.time()
    whole_end = None if limits.whole is None else started + limits.whole
    try:
        if answer is None:
            answer = await _answer(transport, upstream, limits, exchange, retry, started, whole_end)
            if answer.status > 599:
                # Not an HTTP status a client can act on (999 and the like): the provider's answer is not usable.
                raise InvalidAnswer(f"the provider answered with status {answer.status}")
            exchange.upstream_status = answer.status
        if translate is not None:
            if 200 <= answer.status < 300 and answer.content_type == "text/event-stream":
                edit = translate.stream()
            else:
                body = await _translated_body(answer, exchange, upstream.url, limits, whole_end)
                response = _translated_response(answer, body, exchange, translate, secret)
                answer.release()
                answer = None
                return response
        if answer.complete and answer.buffered <= _ONE_WRITE:
            response = _whole_response(answer, answer.take_buffered(), exchange, edit, secret)
        elif secret is not None and not 200 <= answer.status < 300:
            # It may echo the request URL, key and all: read whole (bounded) and scrubbed before a byte goes out.
            body = await _scrubbed_body(answer, exchange, upstream.url, limits, whole_end)
            response = _whole_response(answer, body, exchange, edit, secret)
        else:
            response = _start_response(answer, exchange, edit is not None, secret)
            await response.prepare(request)
            guard = None if write_timeout is None else WriteGuard(request, write_timeout, partial(_stalled, exchange))
            try:
                whole = await _copy_body(answer, response, exchange, upstream.url, limits, whole_end, edit)
            finally:
                if guard is not None:
                    guard.stop()
            if not whole:
                # Cut short: the client's connection is aborted without the end of the body (no terminating chunk,
                # no clean close), as Go's ReverseProxy does, so no client takes a truncated answer for a whole one.
                _abort(request)
                return response
            await response.write_eof()
        answer.release()
        answer = None
        return response
    except TransportError as exc:
        if not isinstance(exc, InvalidHeader):  # the client's fault, refused before anything was sent
            exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "connect"
        raise gateway_error(exc, limit=limits.headers if isinstance(exc, HeadTimedOut) else None) from None
    except ConnectionError as exc:
        if response is not None and response.prepared:
            # Mid-answer: either the client went away (its write failed) or the provider broke off.
            if _client_gone(request):
                exchange.client_disconnected = True
            else:
                log.warning("upstream answer broke off", url=_loggable(upstream.url), error=type(exc).__name__)
                exchange.error_type = "truncated"
                _abort(request)
            return response
        exchange.error_type = "connect"
        raise gateway_error(TransportError(type(exc).__name__)) from None
    except Unscrubbable as exc:
        # Nothing of the body has gone out: the scrubbed head goes, then the connection is cut, never the key.
        assert answer is not None
        log.warning("provider answer not relayed: it cannot be scrubbed", provider=exchange.provider, reason=str(exc))
        exchange.error_type = "truncated"
        response = _start_response(answer, exchange, True, secret)
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
        _abort(request)
        return response
    except asyncio.CancelledError:
        exchange.client_disconnected = True
        raise
    finally:
        if answer is not None:
            answer.discard()


async def open_answer(
    transport: Transport,
    upstream: UpstreamRequest,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy = NO_RETRY,
    started: float | None = None,
) -> Response:
    """The provider's answer head, after the retries `retry` and the time limits allow; nothing has gone to the
    client. A transport failure is the gateway's error (502, 504; 400 for a header that cannot be forwarded), an
    answer whose status is not HTTP a 502. The caller owns the answer: `relay` it, or `discard` it."""
    if started is None:
        started = transport.loop.time()
    whole_end = None if limits.whole is None else started + limits.whole
    try:
        answer = await _answer(transport, upstream, limits, exchange, retry, started, whole_end)
    except TransportError as exc:
        if not isinstance(exc, InvalidHeader):  # the client's fault, refused before anything was sent
            exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "connect"
        raise gateway_error(exc, limit=limits.headers if isinstance(exc, HeadTimedOut) else None) from None
    except ConnectionError as exc:
        exchange.error_type = "connect"
        raise gateway_error(TransportError(type(exc).__name__)) from None
    except asyncio.CancelledError:
        exchange.client_disconnected = True
        raise
    if answer.status > 599:
        # Not an HTTP status a client can act on (999 and the like): the provider's answer is not usable.
        answer.discard()
        exchange.error_type = "connect"
        raise gateway_error(InvalidAnswer(f"the provider answered with status {answer.status}"))
    exchange.upstream_status = answer.status
    return answer


async def _answer(
    transport: Transport,
    upstream: UpstreamRequest,
    limits: Limits,
    exchange: Exchange,
    retry: RetryPolicy,
    started: float,
    whole_end: float | None,
) -> Response:
    """The provider's response head, after as many retries as the policy and the time budget allow."""
    loop = transport.loop
    budget_end = started + limits.budget
    while True:
        now = loop.time()
        head_by = now + limits.headers if whole_end is None else min(now + limits.headers, whole_end)
        try:
            answer = await transport.send(upstream, connect=limits.connect, head_by=head_by)
        except TLSFailed:
            raise
        except TransportError as exc:
            if not exc.retryable or not upstream.resendable:
                raise
            wait = retry.delay(exchange.retries)
            if wait is None or loop.time() + wait >= budget_end:
                raise
            reason = str(exc)
        else:
            if answer.status not in RETRY_STATUSES or not upstream.resendable:
                # A streamed upload that has gone out (even in part) cannot be sent again: its answer is final.
                return answer
            asked = answer.headers
            if answer.status == 429 and retry_after(asked) is None:
                # Out of quota without saying for how long: the same provider again at once would only add to it.
                return answer
            wait = retry.delay(exchange.retries, asked)
            if wait is None or loop.time() + wait >= budget_end:
                # Out of retries or of time: the provider's own answer goes to the client, Retry-After and all.
                return answer
            reason = f"status {answer.status}"
            exchange.upstream_status = answer.status
            answer.discard()
        exchange.retries += 1
        log.info("retrying upstream call", provider=exchange.provider, retry=exchange.retries, reason=reason, wait=wait)
        await asyncio.sleep(wait)


async def fetch(
    transport: Transport, upstream: UpstreamRequest, connect: float | None, limit: int
) -> tuple[int, CIMultiDict[str], bytes]:
    """A small whole answer (status, headers, at most `limit` + 1 bytes of body); the caller bounds the time."""
    answer = await transport.send(upstream, connect=connect, head_by=None)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = await answer.read(None)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        status, answer_headers = answer.status, answer.headers
    except BaseException:
        answer.discard()
        raise
    answer.release()
    return status, answer_headers, b"".join(chunks)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _stalled(exchange: Exchange) -> None:
    log.warning("client stopped reading; ending the exchange", provider=exchange.provider)
    exchange.error_type = "write_timeout"


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _copy_body(
    answer: Response,
    response: web.StreamResponse,
    exchange: Exchange,
    url: URL,
    limits: Limits,
    whole_end: float | None,
    edit: StreamEdit | None,
) -> bool:
    """The per-chunk loop: write, count, let the usage scanner look. Nothing else happens per chunk. False when
    the answer was cut short (the provider broke off, went silent, or ran out of time)."""
    scanner = exchange.scanner
    idle = limits.idle
    sent = 0
    try:
        while chunk := await answer.read(idle, whole_end):
            if not sent:
                exchange.first_chunk_at = time.perf_counter()
            if scanner is not None:
                scanner.feed(chunk)
            if edit is not None:
                chunk = edit.feed(chunk)
                if not chunk:
                    continue
            await response.write(chunk)
            sent += len(chunk)
        if edit is not None and (tail := edit.finish()):
            await response.write(tail)
            sent += len(tail)
        return True
    except AnswerTimedOut:
        log.warning("upstream answer exceeded its time limit", url=_loggable(url), limit=limits.whole)
        exchange.error_type = "timeout"
        return False
    except TransportError as exc:
        log.warning("upstream body ended early", url=_loggable(url), error=type(exc).__name__)
        exchange.error_type = "truncated"
        return False
    finally:
        exchange.bytes_out = sent
        if scanner is not None:
            scanner.finish()


async def _scrubbed_body(
    answer: Response, exchange: Exchange, url: URL, limits: Limits, whole_end: float | None
) -> bytes:
    """A non-2xx body to be scrubbed: over SCRUBBED_MAX it is not relayed (Unscrubbable)."""
    body = await _whole_body(answer, exchange, url, limits, whole_end, SCRUBBED_MAX)
    if body is None:
        raise Unscrubbable(f"a non-2xx body over {SCRUBBED_MAX} bytes")
    return body


async def _translated_body(
    answer: Response, exchange: Exchange, url: URL, limits: Limits, whole_end: float | None
) -> bytes:
    """A body to be translated: over TRANSLATED_MAX, the gateway's 502 (nothing has gone out yet)."""
    body = await _whole_body(answer, exchange, url, limits, whole_end, TRANSLATED_MAX)
    if body is None:
        exchange.error_type = "truncated"
        raise UpstreamError(f"the provider's answer is over {TRANSLATED_MAX} bytes", code="upstream_answer_too_large")
    return body


async def _whole_body(
    answer: Response, exchange: Exchange, url: URL, limits: Limits, whole_end: float | None, cap: int
) -> bytes | None:
    """The body read whole within the answer's limits; None once it passes `cap` bytes. A provider that breaks off
    or runs out of time gets the gateway's 502 or 504 (nothing of the answer has reached the client yet)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await answer.read(limits.idle, whole_end):
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
    except TransportError as exc:
        log.warning("upstream answer not read whole", url=_loggable(url), error=type(exc).__name__)
        exchange.error_type = "timeout" if isinstance(exc, TimedOut) else "truncated"
        raise gateway_error(exc, late="did not finish its answer") from None
    return b"".join(chunks)


def _relayed_headers(answer: Response, exchange: Exchange) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    named: set[str] | None = None
    for name, value in answer.header_items:
        lowered = name.lower()
        if lowered == "x-request-id":
            # The provider's id stays visible under its own name; X-Request-ID is the gateway's.
            exchange.upstream_request_id = value[:128]
            headers.add("X-Upstream-Request-ID", value)
        elif lowered not in _NOT_RELAYED:
            headers.add(name, value)
        elif lowered == "connection":
            named = {t.strip().lower() for t in value.split(",")} | (named or set())
    if named:
        # Headers the provider's Connection header names are hop-by-hop too: they end here.
        for hop in named:
            headers.popall(hop, None)
    if exchange.request_id:
        # Set before prepare(): a streamed answer's headers cannot change later.
        headers["X-Request-ID"] = exchange.request_id
    if exchange.group is not None:
        # A model group's request: which deployment answered (docs/routing.md).
        headers["x-gateway-provider"] = exchange.provider or ""
        headers["x-gateway-model"] = exchange.model or ""
    if exchange.retries and answer.status >= 400:
        # The gateway already retried: a client that retries too would multiply the calls to the provider.
        headers["x-should-retry"] = "false"
    return headers


def _whole_response(
    answer: Response, body: bytes, exchange: Exchange, edit: StreamEdit | None, secret: bytes | None
) -> web.Response:
    """An answer whose whole body is in: one write, headers and body together."""
    headers = _relayed_headers(answer, exchange)
    reason = answer.reason
    if secret is not None:
        headers, reason = scrubbed_head(answer, headers, exchange, secret)
        if not 200 <= answer.status < 300:
            body = scrubbed_body(headers, body, secret)
    if body:
        exchange.first_chunk_at = time.perf_counter()
    if exchange.scanner is not None:
        exchange.scanner.whole(body)
    if edit is not None:
        body = edit.feed(body) + edit.finish()
    exchange.bytes_out = len(body)
    # The plain class when a type is there to keep: the override costs a frame per answer.
    kind = web.Response if hdrs.CONTENT_TYPE in headers else RelayedWhole
    return kind(status=answer.status, reason=reason or None, headers=headers, body=body)


def _translated_response(
    answer: Response, body: bytes, exchange: Exchange, translate: Translate, secret: bytes | None
) -> web.Response:
    """A whole answer in the route's dialect: the usage scanner reads the provider's bytes, the client gets the
    translation (its status and content type; the provider's other headers as for any answer)."""
    headers = _relayed_headers(answer, exchange)
    if secret is not None:
        headers, _ = scrubbed_head(answer, headers, exchange, secret)
        if not 200 <= answer.status < 300:
            body = scrubbed_body(headers, body, secret)
    if exchange.scanner is not None:
        exchange.scanner.whole(body)
    status, content_type, body = translate.whole(answer.status, body)
    headers.popall("Content-Encoding", None)
    headers["Content-Type"] = content_type
    exchange.first_chunk_at = time.perf_counter()
    exchange.bytes_out = len(body)
    return web.Response(status=status, headers=headers, body=body)


def _start_response(
    answer: Response, exchange: Exchange, edited: bool, secret: bytes | None = None
) -> web.StreamResponse:
    headers = _relayed_headers(answer, exchange)
    reason = answer.reason
    if secret is not None:
        headers, reason = scrubbed_head(answer, headers, exchange, secret)
    kind = web.StreamResponse if hdrs.CONTENT_TYPE in headers else RelayedStream
    response = kind(status=answer.status, reason=reason or None, headers=headers)
    if answer.content_length is not None and not answer.chunked and not edited:
        response.content_length = answer.content_length
    if answer.content_type == "text/event-stream":
        # Tell any buffering proxy in front of us (nginx) to pass events on at once.
        response.headers.setdefault("X-Accel-Buffering", "no")
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _loggable(url: URL) -> str:
    """The URL without its query string, where a provider key may travel, nor its user and password."""
    return str(url.with_query(None).with_user(None))
