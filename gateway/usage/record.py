"""The usage row: what the sink captures from a finished request's Exchange (cheaply, on the event loop) and the
rows the writer makes of it later: the request's (cost from the table's prices, metadata serialized and bounded)
and one per MCP tool call the gateway ran for it (never the call's arguments)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from gateway.config.providers import ProviderTable
from gateway.exchange import Exchange, ToolRun, Usage

# The body's `metadata` is kept up to this many bytes of JSON; larger, only its size is kept.
MAX_METADATA = 2048
MAX_USER = 256
MAX_TEXT = 200  # model names, request ids and other client text kept in a row

# The table's columns in the order rows are written (schema.py creates them).
COLUMNS = (
    "request_id",
    "ts",
    "client",
    "route",
    "operation",
    "provider",
    "model_requested",
    "model",
    "model_group",
    "strategy",
    "status",
    "error_type",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost",
    "stream",
    "retries",
    "fallbacks",
    "metadata",
    "end_user",
    "request_body",
    "response_body",
)

# The tool-call table's columns, in the order its rows are written.
TOOL_COLUMNS = ("request_id", "ts", "server", "tool", "outcome", "duration_ms")

Scrub = Callable[[Any], Any]  # secrets out of a value (telemetry's redactor), passed in by the app
Bodies = Callable[[Exchange], tuple[str | None, str | None]]  # the stored request and answer bodies, or None


class Capture(NamedTuple):
    """What the sink takes from the Exchange: references and numbers only, no serialization."""

    request_id: str
    ts: float  # wall-clock seconds when the request started
    client: str | None
    route: str
    operation: str
    provider: str | None
    requested_model: str | None
    model: str | None
    group: str | None
    strategy: str | None
    status: int
    error_type: str | None
    duration: float  # seconds
    ttft: float | None  # seconds
    usage: Usage | None
    stream: bool
    retries: int
    fallbacks: int
    metadata: Any
    user: Any
    request_body: str | None
    response_body: str | None
    tool_runs: list[ToolRun] | None


def capture(exchange: Exchange, status: int, ended: float, bodies: Bodies | None = None) -> Capture:
    """The sink's part: one clock read, a few attribute reads, no allocation beyond the tuple."""
    scanner = exchange.scanner
    started = exchange.started
    duration = ended - started
    if scanner is not None:
        usage = scanner.usage
        first = scanner.first_content_at
    else:
        usage = first = None
    body = exchange.request_body
    if body is not None:
        metadata, user = body.get("metadata"), body.get("user")
    else:
        metadata = user = None
    stored = bodies(exchange) if bodies is not None else (None, None)
    return Capture(
        exchange.request_id,
        # The request's start on the wall clock: the sink runs right after it ended (one loop turn at most).
        time.time() - duration,
        exchange.client_name,
        exchange.route,
        exchange.operation,
        exchange.provider,
        exchange.requested_model,
        exchange.model,
        exchange.group,
        exchange.strategy,
        status,
        exchange.error_type,
        duration,
        None if first is None else first - started,
        usage,
        exchange.stream,
        exchange.retries,
        exchange.fallbacks,
        metadata,
        user,
        *stored,
        exchange.tool_runs,
    )


def row(c: Capture, table: ProviderTable, scrub: Scrub) -> tuple[Any, ...]:
    """The writer's part: the row in COLUMNS order."""
    usage = c.usage
    cost = None
    if usage is not None and c.provider is not None and c.model is not None:
        price = table.prices(c.provider, c.model)
        if price is not None:
            cost = price.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens)
    return (
        _text(c.request_id),
        c.ts,
        _text(c.client),
        c.route,
        c.operation,
        c.provider,
        _text(c.requested_model),
        _text(c.model),
        _text(c.group),
        c.strategy,
        c.status,
        c.error_type,
        round(c.duration * 1000.0, 3),
        None if c.ttft is None else round(c.ttft * 1000.0, 3),
        None if usage is None else usage.input_tokens,
        None if usage is None else usage.output_tokens,
        None if usage is None else usage.cached_tokens,
        cost,
        c.stream,
        c.retries,
        c.fallbacks,
        metadata_text(c.metadata, scrub),
        scrub(_text(c.user, MAX_USER)) if isinstance(c.user, str) and c.user else None,
        c.request_body,
        c.response_body,
    )


def tool_rows(c: Capture) -> list[tuple[Any, ...]]:
    """The writer's part for a request's MCP tool calls: one row each, in TOOL_COLUMNS order."""
    request_id = _text(c.request_id)
    return [
        (request_id, run.at, run.server, run.tool, run.outcome, round(run.seconds * 1000.0, 3))
        for run in c.tool_runs or ()
    ]


def _text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """Client text, bounded; NUL is dropped (PostgreSQL's TEXT refuses it, and one bad row would sink a batch)."""
    if value is None:
        return None
    value = value[:limit]
    return value.replace("\x00", "") if "\x00" in value else value


def metadata_text(metadata: Any, scrub: Scrub) -> str | None:
    """The body's `metadata` object as JSON, scrubbed of secrets; beyond MAX_METADATA bytes, only its size."""
    if not isinstance(metadata, dict) or not metadata:
        return None
    try:
        text = orjson.dumps(scrub(metadata))
    except TypeError:  # e.g. integers beyond 64 bits
        return orjson.dumps({"unreadable": True}).decode()
    if len(text) > MAX_METADATA:
        return orjson.dumps({"truncated": True, "bytes": len(text)}).decode()
    return text.decode()
