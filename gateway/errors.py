"""The gateway's own errors, rendered in OpenAI's envelope by one middleware.

    GatewayError                    status, type, code -> {"error": {"message", "type", "code"}}
    ├── InvalidRequest              400 invalid_request_error
    │   ├── RequestTooLarge         413 invalid_request_error / request_too_large
    │   ├── RequestTimeout          408 invalid_request_error / request_timeout
    │   └── IncompleteRequest       400 invalid_request_error / incomplete_body
    ├── Unauthenticated             401 authentication_error / invalid_api_key (+ WWW-Authenticate)
    ├── PaymentRequired             402 insufficient_quota / paid_account_required
    ├── Forbidden                   403 permission_error / forbidden
    ├── ModelNotAllowed             403 permission_error / model_not_allowed
    ├── NoProvider                  404 no_provider
    ├── RateLimited                 429 requests / rate_limit_exceeded (+ Retry-After)
    ├── LimiterUnavailable          503 server_error / rate_limiter_unavailable
    ├── ProviderNotConfigured       503 provider_not_configured
    ├── UpstreamError               502 upstream_error
    └── UpstreamTimeout             504 upstream_error / upstream_timeout

ConfigError is separate: it stops start-up and is never rendered to a client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import web

log = structlog.get_logger("gateway")


class ConfigError(Exception):
    """A bad providers file or environment: names the source and lists every problem found."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))

    def render(self) -> str:
        lines = [f"invalid configuration in {self.source}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    close_connection = False

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"
    close_connection = True  # the rest of the body is never read


class RequestTimeout(InvalidRequest):
    status = 408
    code = "request_timeout"
    close_connection = True


class IncompleteRequest(InvalidRequest):
    code = "incomplete_body"
    close_connection = True  # the framing is lost: nothing after it on this connection can be trusted


class NoProvider(GatewayError):
    status = 404
    type = "no_provider"
    code = "no_provider"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


AUTH_REALM = 'Bearer realm="llm-gateway"'


class Unauthenticated(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, invalid: bool = True) -> None:
        challenge = f'{AUTH_REALM}, error="invalid_token"' if invalid else AUTH_REALM
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class PaymentRequired(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "paid_account_required"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class RateLimited(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class LimiterUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


class ProviderNotConfigured(GatewayError):
    status = 503
    type = "provider_not_configured"
    code = "provider_not_configured"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class UpstreamReply(Exception):
    """A provider's own error answer, passed to the client unchanged (status, body, content type)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.headers = headers


def envelope(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


def error_response(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(envelope(message, type_, code)),
        content_type="application/json",
        headers=headers,
    )


# aiohttp's own HTTP exceptions (404 route, 405 method, 413 body) mapped to OpenAI's types.
_HTTP_CODES = {
    404: "unknown_url",
    405: "method_not_allowed",
    413: "request_too_large",
    408: "request_timeout",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into OpenAI's envelope; once a response has started, nothing can be rendered."""
    try:
        return await handler(request)
    except GatewayError as exc:
        response = error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)
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
        return error_response(exc.status, message, "invalid_request_error", _HTTP_CODES.get(exc.status), headers)
    except Exception:
        # Never a stack trace to the client; the log keeps it for the operator.
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal gateway error", "server_error", "internal_error")


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"Invalid URL ({request.method} {request.path})"
    if exc.status == 405:
        return f"Method {request.method} not allowed for {request.path}"
    if exc.status == 413:
        return "request body too large"
    return exc.reason
