"""Anthropic's Messages API dialect: the requests the gateway checks (`/v1/messages` and its `count_tokens`), and
the error envelope, `{"type": "error", "error": {"type", "message"}}`, with the error types its SDK maps to exception
classes (by status, as Anthropic's own API assigns them). Answers are relayed as the provider sent them.
"""

from __future__ import annotations

import orjson

from gateway.dialects.base import Dialect
from gateway.dialects.openai import ModelRequest, parse_model_request
from gateway.errors import InvalidRequest

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


def parse_messages(raw: bytes) -> ModelRequest:
    """A Messages (or count_tokens) request: a model request, routed by `model` like any other, with a non-empty
    array of message objects. Everything else is the provider's to judge."""
    request = parse_model_request(raw)
    messages = request.body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", code="invalid_messages")
    for message in messages:
        if type(message) is not dict:  # orjson builds plain dicts
            raise InvalidRequest("each entry of 'messages' must be an object", code="invalid_messages")
    return request
