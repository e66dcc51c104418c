"""OpenAI's dialect: the request shapes the gateway checks (a chat request, any body that names a model) and the
error envelope `{"error": {"message", "type", "code"}}` that OpenAI's SDKs read.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from gateway.dialects.base import Dialect
from gateway.errors import InvalidRequest


def envelope(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


def error_body(status: int, message: str, type_: str, code: str | None) -> bytes:
    return orjson.dumps(envelope(message, type_, code))


DIALECT = Dialect("openai", error_body)


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return body


class ModelRequest(NamedTuple):
    """A request routed by the model it names. Made per request: a named tuple is the cheapest record to build."""

    body: dict[str, Any]
    model: str
    stream: bool
    provider: str | None


def parse_model_request(raw: bytes) -> ModelRequest:
    """Any JSON body routed by its `model` (embeddings, completions, ...): model, optional stream and provider."""
    body = parse_object(raw)
    return _model_request(body, _model(body))


def parse_chat(raw: bytes) -> ModelRequest:
    """A chat completion request: a model request with a non-empty array of message objects."""
    body = parse_object(raw)
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", code="invalid_messages")
    for message in messages:
        if type(message) is not dict:  # orjson builds plain dicts
            raise InvalidRequest("each entry of 'messages' must be an object", code="invalid_messages")
    return _model_request(body, model)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", code="invalid_model")
    return model


def _model_request(body: dict[str, Any], model: str) -> ModelRequest:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", code="invalid_stream")
    provider = body.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise InvalidRequest("'provider' must be a non-empty string", code="invalid_provider")
    return ModelRequest(body, model, stream, provider)
