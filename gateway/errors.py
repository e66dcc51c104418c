"""The gateway's own errors; `api/errors.py` renders them in the envelope of each route's dialect.

    GatewayError                    status, type (OpenAI's error type), code
    ├── InvalidRequest              400 invalid_request_error
    │   ├── RequestTooLarge         413 invalid_request_error / request_too_large
    │   ├── RequestTimeout          408 invalid_request_error / request_timeout
    │   └── IncompleteRequest       400 invalid_request_error / incomplete_body
    ├── Unauthenticated             401 authentication_error / invalid_api_key (+ WWW-Authenticate)
    ├── PaymentRequired             402 insufficient_quota / paid_account_required
    ├── Forbidden                   403 permission_error / forbidden
    ├── ModelNotAllowed             403 permission_error / model_not_allowed
    ├── NoProvider                  404 no_provider
    ├── ModelNotFound               404 invalid_request_error / model_not_found
    ├── NotFound                    404 invalid_request_error / not_found (a usage record, an API that is off)
    ├── ResponseNotFound            404 invalid_request_error / response_not_found
    ├── Conflict                    409 invalid_request_error / conflict (a registry name taken, a file's entry)
    ├── RateLimited                 429 requests / rate_limit_exceeded (+ Retry-After)
    ├── LimiterUnavailable          503 server_error / rate_limiter_unavailable
    ├── ServerBusy                  503 server_error / server_busy (+ Retry-After: bodies in flight at their limit)
    ├── ProviderNotConfigured       503 provider_not_configured
    ├── StoreUnavailable            503 server_error / usage_store_unavailable
    ├── GroupUnavailable            503 server_error / no_deployment_available (+ Retry-After)
    ├── UpstreamError               502 upstream_error
    └── UpstreamTimeout             504 upstream_error / upstream_timeout

ConfigError is separate: it stops start-up and is never rendered to a client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web


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
    # What the answer tells a client's SDK (`x-should-retry`, read by OpenAI's and Anthropic's): False for what a
    # retry cannot change, True where one can help, None to leave it to the SDK's own rules.
    should_retry: bool | None = False

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
    should_retry = None
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


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class ResponseNotFound(GatewayError):
    """A Responses API id the gateway cannot place: not made through it (or forgotten), or another client's."""

    status = 404
    type = "invalid_request_error"
    code = "response_not_found"


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
    should_retry = True  # after its Retry-After
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class LimiterUnavailable(GatewayError):
    should_retry = True
    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


class ServerBusy(GatewayError):
    """The bodies in flight already take the memory set aside for them: come back in a moment."""

    should_retry = True
    status = 503
    type = "server_error"
    code = "server_busy"
    close_connection = True  # the rest of the body is never read


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    """The change conflicts with what exists: a provider name already taken, or an entry of the providers file
    (read-only through the API)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class StoreUnavailable(GatewayError):
    """The usage store cannot answer now (not open yet, down, too slow)."""

    should_retry = True
    status = 503
    type = "server_error"
    code = "usage_store_unavailable"


class ProviderNotConfigured(GatewayError):
    status = 503
    type = "provider_not_configured"
    code = "provider_not_configured"


class GroupUnavailable(GatewayError):
    """No deployment of a model group could take the request: the message says why for each (never a secret),
    Retry-After when the soonest circuit breaker lets traffic through again."""

    should_retry = True
    status = 503
    type = "server_error"
    code = "no_deployment_available"


class UpstreamError(GatewayError):
    should_retry = None  # False once the gateway itself has retried
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    should_retry = None
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
