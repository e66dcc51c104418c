"""Usage rows for the store tests: a row in the store's column order from a few named fields (a request's, an
MCP tool call's)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.usage.record import COLUMNS, TOOL_COLUMNS
from gateway.usage.service import USAGE

BASE_TS = 1_800_000_000.0  # 2027-01-15T08:00:00Z, on the hour


def usage_row(**fields: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "request_id": "r",
        "ts": BASE_TS,
        "client": None,
        "route": "/v1/chat/completions",
        "operation": "chat",
        "provider": "p",
        "model_requested": None,
        "model": "m",
        "model_group": None,
        "strategy": None,
        "status": 200,
        "error_type": None,
        "duration_ms": 10.0,
        "ttft_ms": None,
        "input_tokens": None,
        "output_tokens": None,
        "cached_tokens": None,
        "cost": None,
        "stream": False,
        "retries": 0,
        "fallbacks": 0,
        "metadata": None,
        "end_user": None,
        "request_body": None,
        "response_body": None,
    }
    unknown = set(fields) - set(values)
    assert not unknown, f"not columns: {unknown}"
    values.update(fields)
    return tuple(values[name] for name in COLUMNS)


def tool_row(**fields: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "request_id": "r",
        "ts": BASE_TS,
        "server": "files",
        "tool": "files__add",
        "outcome": "ok",
        "duration_ms": 1.5,
    }
    unknown = set(fields) - set(values)
    assert not unknown, f"not columns: {unknown}"
    values.update(fields)
    return tuple(values[name] for name in TOOL_COLUMNS)


async def written(app: web.Application, rows: int, limit: float = 15.0) -> None:
    """Wait (bounded) until the app's usage writer has stored `rows` rows."""
    usage = app[USAGE]
    for _ in range(int(limit / 0.01)):
        if usage.writer.counters.written >= rows:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{usage.writer.counters.written} of {rows} rows written")


async def store_ready(app: web.Application) -> None:
    """Wait (bounded) until the app's usage store is open and migrated."""
    for _ in range(1000):
        if app[USAGE].ready:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the usage store did not open")
