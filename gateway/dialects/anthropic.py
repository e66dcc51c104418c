"""Anthropic's Messages API dialect: its error envelope, `{"type": "error", "error": {"type", "message"}}`, with
the error types its SDK maps to exception classes (by status, as Anthropic's own API assigns them).
"""

from __future__ import annotations

import orjson

from gateway.dialects.base import Dialect

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(status: int, message: str, type_: str, code: str | None) -> bytes:
    # The gateway's own type and code have no place in Anthropic's envelope; the status says the type.
    return orjson.dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


DIALECT = Dialect("anthropic", error_body)
