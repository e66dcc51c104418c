"""Routes whose body is a multipart upload naming a model (image edits and variations, transcriptions and
translations): the form's head is read up to the model, the request routed like any other, and the upload relayed
to the provider as it arrives, never held whole; only the `model` part is rewritten (and `provider` taken out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.access import auth
from gateway.api.inbound import Held, holding_body
from gateway.api.inference import Translator, first_allowed
from gateway.dialects.multipart import FormHead, FormTail, boundary_of
from gateway.errors import Handler, IncompleteRequest, InvalidRequest, RequestTimeout, RequestTooLarge
from gateway.exchange import EXCHANGE, Exchange
from gateway.routing import resolve
from gateway.runtime.state import STATE
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.transport import StreamedBody, UpstreamRequest

# The fields a request is routed by: a second one later in the form is refused.
ROUTED = frozenset({"model", "provider"})
# The answers a translator can read: JSON (a text, subtitle or streamed answer cannot be put in another envelope).
TRANSLATABLE_FORMATS = frozenset({"json", "verbose_json"})


class Upload:
    """The client's body as it arrives: bounded in size (413 once past `limit`, a chunked body included) and in
    silence (408 after `idle` seconds without a byte), counted in the record."""

    __slots__ = ("_exchange", "_idle", "_limit", "_request", "size")

    def __init__(self, request: web.Request, limit: int, idle: float, exchange: Exchange) -> None:
        self._request = request
        self._limit = limit
        self._idle = idle
        self._exchange = exchange
        self.size = 0

    async def read(self) -> bytes:
        """The next piece, b"" at the end."""
        content = self._request.content
        try:
            if content.is_eof() or content.total_bytes > self.size:
                chunk = await content.readany()  # already here: nothing to wait for, so no timer
            else:
                async with asyncio.timeout(self._idle):
                    chunk = await content.readany()
        except TimeoutError:
            raise RequestTimeout(f"the upload went silent for more than {self._idle:g}s") from None
        except (HttpProcessingError, ConnectionError) as exc:
            raise IncompleteRequest(f"the request body could not be read ({type(exc).__name__})") from None
        self.size += len(chunk)
        self._exchange.bytes_in = self.size
        if self.size > self._limit:
            raise RequestTooLarge(f"request body is over the limit of {self._limit} bytes")
        return chunk

    async def rest(self, first: bytes, tail: FormTail) -> AsyncIterator[bytes]:
        """`first` (what was read past the form's head), then the rest of the body as it comes."""
        if first:
            tail.feed(first)
            yield first
        while chunk := await self.read():
            tail.feed(chunk)
            yield chunk


def upload_call(operation: str, translator: Translator | None = None) -> Handler:
    """The handler of one upload operation: the provider's endpoint of that name serves it. `translator`: the route
    speaks another dialect, whose translator gives the provider's answer back in its own (the upload itself goes as
    the client sent it)."""

    async def serve(request: web.Request, held: Held) -> web.StreamResponse:
        state = request.app[STATE]
        settings, table, model_filter, policies = state.settings, state.table, state.model_filter, state.policies
        exchange = request[EXCHANGE]
        limit = table.body_limits.get(operation) or settings.max_request_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise RequestTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
        boundary = boundary_of(request.headers.get("Content-Type"))
        form = FormHead(boundary)
        upload = Upload(request, limit, settings.read_timeout, exchange)
        while not form.done:
            chunk = await upload.read()
            if not chunk:
                form.finish()
            held.take(len(chunk))  # the head is held until it goes upstream
            form.feed(chunk)
        model = form.value("model")
        if model is None or not model.strip():
            raise InvalidRequest("'model' is required: a form field before the files", code="invalid_model")
        provider_field = form.value("provider")
        if provider_field is not None and not provider_field.strip():
            raise InvalidRequest("'provider' must be a non-empty string", code="invalid_provider")
        for name in ROUTED:
            if sum(1 for field in form.fields if field.name == name) > 1:
                raise InvalidRequest(f"the form repeats the field {name!r}; send it once", code="duplicate_key")
        exchange.stream = stream = (form.value("stream") or "").strip().lower() == "true"
        if translator is not None:
            # Refused before anything goes upstream, rather than a provider's answer the gateway cannot translate.
            answer_format = form.value("response_format")
            if answer_format is not None and answer_format.strip() not in TRANSLATABLE_FORMATS:
                raise InvalidRequest(
                    "'response_format' must be json or verbose_json here: the answer is translated into this API's "
                    "envelope",
                    code="invalid_response_format",
                )
            if stream:
                raise InvalidRequest(
                    "'stream' is not served here: the answer is one enveloped JSON", code="invalid_stream"
                )
        candidates = resolve.resolve(
            table, model, operation, query_provider=request.query.get("provider"), body_provider=provider_field
        )
        route = first_allowed(request, exchange, candidates, model_filter, table.names)
        provider = route.provider
        if auth.CLIENT in request:
            # A client with a token budget reserves its output allowance (the upload's size says nothing of its
            # tokens: audio and images are not text); the provider's reported usage settles it.
            await auth.reserve_tokens(request, 0, {})
        rules = policies[provider.id]
        exchange.scanner = SseUsage() if stream else JsonUsage()
        changes: dict[str, bytes | None] = {}
        if route.model != model:
            changes["model"] = route.model.encode()
        if provider_field is not None:
            changes["provider"] = None
        head = form.rewritten(changes)
        size = None if length is None else length - form.end + len(head)
        chunks = _chained(head, upload.rest(form.rest, FormTail(boundary, ROUTED)))
        upstream = UpstreamRequest(
            route.endpoint.method,
            route.endpoint.url,
            outbound.upstream_headers(
                request.raw_headers,
                provider,
                # A translated answer is read by the gateway: it comes unencoded.
                disable_compression=settings.disable_compression or translator is not None,
                request_id=exchange.request_id,
                inference=True,
            ),
            StreamedBody(chunks, size),
        )
        return await call.relay(
            request,
            request.app[call.TRANSPORT],
            upstream,
            rules.limits(stream),
            exchange,
            rules.retry,
            settings.write_timeout,
            secret=query_secret(provider),
            translate=None if translator is None else translator(provider, route.model),
        )

    return holding_body(serve)


def json_or_form(json: Handler, form: Handler) -> Handler:
    """A route that takes a JSON body or a multipart form (the Inference API's /transcribe): each goes to its own
    handler by the request's Content-Type."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.content_type.startswith("multipart/"):
            return await form(request)
        return await json(request)

    return handler


async def _chained(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk
