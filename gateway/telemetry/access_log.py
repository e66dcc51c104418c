"""The access log: one line per request built from its Exchange when it ends, and in development mode the chat
request and answer bodies, truncated per DEBUG_CONTENT_TRUNCATE_WORDS and DEBUG_MAX_MESSAGES.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway.exchange import Exchange, Sink
from gateway.telemetry.logs import JsonLines, json_lines
from gateway.telemetry.redact import Redactor
from gateway.telemetry.scanners import JsonUsage, SseUsage

log = structlog.get_logger("gateway.access")

MAX_PATH = 256
MAX_MODEL = 200
# Methods are client text too; the usual ones need no scrubbing.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def write(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
    """One line with everything an operator asks about a request; 5xx lines are warnings."""
    scanner = exchange.scanner
    usage = scanner.usage if scanner is not None else None
    first = scanner.first_content_at if isinstance(scanner, SseUsage) else None
    lines = json_lines()
    # Text a client or provider chose could carry a secret: it is scrubbed. The rest is the gateway's own (route
    # patterns, table ids, kinds) or numbers.
    scrub = _scrubber(lines)
    method = request.method
    fields: dict[str, Any] = {
        "method": method if method in _METHODS else scrub(method),
        "route": exchange.route,
        "path": scrub(request.path[:MAX_PATH]),
        "status": status,
        "operation": exchange.operation,
        "provider": exchange.provider,
        "model": scrub(exchange.model[:MAX_MODEL]) if exchange.model else None,
        "stream": exchange.stream,
        "upstream_status": exchange.upstream_status,
        "upstream_request_id": scrub(exchange.upstream_request_id) if exchange.upstream_request_id else None,
        "duration_ms": _ms(ended - exchange.started),
        "ttft_ms": _ms(first - exchange.started) if first is not None else None,
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "usage_requested": exchange.usage_requested,
        "bytes_in": exchange.bytes_in,
        "bytes_out": exchange.bytes_out,
        "error_type": exchange.error_type,
        "retries": exchange.retries,
        "client": scrub(exchange.client_name) if exchange.client_name else None,
        "client_disconnected": exchange.client_disconnected,
    }
    if exchange.group is not None:
        # Only a model group's request pays for these; the names are the table's.
        fields["group"] = exchange.group
        fields["strategy"] = exchange.strategy
        fields["fallbacks"] = exchange.fallbacks
    if lines is not None:
        lines.write_scrubbed(logging.WARNING if status >= 500 else logging.INFO, "request", fields)
    else:
        (log.warning if status >= 500 else log.info)("request", **fields)


def _scrubber(lines: JsonLines | None) -> Callable[[str], str]:
    # Through structlog, its redaction processor scrubs every value anyway.
    return lines.scrub if lines is not None else _unchanged


def _unchanged(text: str) -> str:
    return text


def body_log(words: int, max_messages: int) -> Sink:
    """A sink for development mode only: what was asked and (for whole JSON answers) what came back, truncated."""

    def write_bodies(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        bodies(exchange, words, max_messages)

    return write_bodies


def bodies(exchange: Exchange, words: int, max_messages: int) -> None:
    if exchange.request_body is not None:
        log.debug("request body", body=preview_chat(exchange.request_body, words, max_messages))
    scanner = exchange.scanner
    if isinstance(scanner, JsonUsage) and scanner.body is not None:
        log.debug("response body", body=preview_answer(scanner.body, words))


# A stored body (usage store, USAGE_STORE_BODIES) larger than this once truncated keeps only its size.
MAX_STORED_BODY = 64 * 1024


def stored_bodies(
    words: int, max_messages: int, redactor: Redactor
) -> Callable[[Exchange], tuple[str | None, str | None]]:
    """For the usage store's opt-in bodies: the request and (whole JSON) answer as JSON text, truncated like the
    development log and redacted like every log line."""

    def render(exchange: Exchange) -> tuple[str | None, str | None]:
        asked = exchange.request_body
        scanner = exchange.scanner
        answer = scanner.body if isinstance(scanner, JsonUsage) else None
        return (
            None if asked is None else _bounded(redactor.clean(preview_chat(asked, words, max_messages))),
            None if answer is None else _bounded(redactor.clean(preview_answer(answer, words))),
        )

    return render


def _bounded(value: Any) -> str:
    try:
        text = orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits
        return '{"unreadable": true}'
    if len(text) > MAX_STORED_BODY:
        text = orjson.dumps({"truncated": True, "bytes": len(text)})
    return text.decode()


def truncate_words(text: str, words: int) -> str:
    parts = text.split(maxsplit=words)
    if len(parts) <= words:
        return text
    return " ".join(parts[:words]) + " ..."


def _content(content: Any, words: int) -> Any:
    if isinstance(content, str):
        return truncate_words(content, words)
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append({**part, "text": truncate_words(part["text"], words)})
            elif isinstance(part, dict):
                # Images and audio arrive inline as base64: only their type is worth a log line.
                parts.append({"type": part.get("type")})
            else:
                parts.append(part)
        return parts
    return content


def preview_chat(body: dict[str, Any], words: int, max_messages: int) -> dict[str, Any]:
    """The chat body with at most `max_messages` messages, each text cut to `words` words."""
    preview = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        kept = messages[:max_messages]
        preview["messages"] = [
            {**m, "content": _content(m.get("content"), words)} if isinstance(m, dict) else m for m in kept
        ]
        if len(messages) > len(kept):
            preview["messages_omitted"] = len(messages) - len(kept)
    return preview


def preview_answer(body: dict[str, Any], words: int) -> dict[str, Any]:
    preview = dict(body)
    choices = body.get("choices")
    if isinstance(choices, list):
        preview["choices"] = [
            {**c, "message": {**c["message"], "content": _content(c["message"].get("content"), words)}}
            if isinstance(c, dict) and isinstance(c.get("message"), dict)
            else c
            for c in choices
        ]
    return preview
