"""One place renders errors: every failure becomes the envelope of the route's dialect (OpenAI's for `/v1/*`,
Anthropic's for `/v1/messages`, ...), chosen through the route table. Once an answer has started, nothing can be
rendered: the relay ends such an answer itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.dialects import DEFAULT, Dialect
from gateway.errors import GatewayError, Handler, UpstreamReply
from gateway.exchange import EXCHANGE

log = structlog.get_logger("gateway")

SHOULD_RETRY = "x-should-retry"

# aiohttp's own HTTP exceptions (404 route, 405 method, 413 body) mapped to OpenAI's codes.
_HTTP_CODES = {
    404: "unknown_url",
    405: "method_not_allowed",
    413: "request_too_large",
    408: "request_timeout",
}


def error_response(
    dialect: Dialect,
    status: int,
    message: str,
    type_: str,
    code: str | None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=dialect.error_body(status, message, type_, code),
        content_type=dialect.error_content_type,
        headers=headers,
    )


def error_renderer(dialects: Mapping[str, Dialect], prefixes: Sequence[tuple[str, Dialect]] = ()) -> Middleware:
    """The middleware; `dialects` maps each route's canonical pattern to its dialect; an unmatched path speaks the
    dialect of the first of `prefixes` (path prefix, dialect) it starts with, else OpenAI's."""

    async def dialect_of(request: web.Request) -> Dialect:
        resource = request.match_info.route.resource
        if resource is not None:
            return dialects.get(resource.canonical, DEFAULT)
        # A path the table has with a method it does not (405): the path's dialect still speaks to this client.
        for candidate in request.app.router.resources():
            _, allowed = await candidate.resolve(request)
            if allowed:
                return dialects.get(candidate.canonical, DEFAULT)
        path = request.path
        for prefix, dialect in prefixes:
            if path.startswith(prefix):
                return dialect
        return DEFAULT

    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            headers = exc.headers
            should_retry = exc.should_retry
            exchange = request.get(EXCHANGE)
            if should_retry is None and exchange is not None and exchange.retries:
                should_retry = False  # the gateway already retried: a client retry would multiply the calls
            if should_retry is not None:
                headers = {**headers, SHOULD_RETRY: "true" if should_retry else "false"}
            response = error_response(await dialect_of(request), exc.status, exc.message, exc.type, exc.code, headers)
            if exc.close_connection:
                response.force_close()
            return response
        except UpstreamReply as reply:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = _http_message(request, exc)
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            code = _HTTP_CODES.get(exc.status)
            return error_response(
                await dialect_of(request), exc.status, message, "invalid_request_error", code, headers
            )
        except Exception:
            # Never a stack trace to the client; the log keeps it for the operator.
            log.exception("unhandled error", path=request.path, method=request.method)
            return error_response(
                await dialect_of(request), 500, "internal gateway error", "server_error", "internal_error"
            )

    return render_errors


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return (
            f"Invalid URL ({request.method} {request.path}): the gateway does not serve this route; a provider's own "
            "API is reachable as /proxy/{provider}/..."
        )
    if exc.status == 405:
        return f"Method {request.method} not allowed for {request.path}"
    if exc.status == 413:
        return "request body too large"
    return exc.reason
