"""The usage queries: a summary, grouped buckets and pages of rows for a time range and filters, and one request
by id (with the MCP tool calls the gateway ran for it). Every read is bounded: a time range always, a cap on
buckets and rows, keyset pages (never OFFSET scans)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from gateway.usage.record import COLUMNS
from gateway.usage.store import Row, Store

GroupBy = Literal["hour", "day", "model", "provider", "client"]
GROUPS: tuple[GroupBy, ...] = ("hour", "day", "model", "provider", "client")
MAX_BUCKETS = 1000
MAX_ROWS = 1000
_SECONDS = {"hour": 3600, "day": 86400}

# The columns a page of rows shows: the stored ones without the bodies (those only in one request's record).
_LIST = ("id", *COLUMNS[: COLUMNS.index("request_body")])
_ONE = (*_LIST, "request_body", "response_body")


class QueryError(ValueError):
    """A query that cannot be answered as asked (too many buckets, a bad cursor); the message says why."""


@dataclass(frozen=True, slots=True)
class Filters:
    since: float  # epoch seconds, inclusive
    until: float  # epoch seconds, exclusive
    provider: str | None = None
    model: str | None = None  # the model served or the one asked for
    client: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["ts >= ?", "ts < ?"]
        params: list[Any] = [self.since, self.until]
        if self.provider is not None:
            clauses.append("provider = ?")
            params.append(self.provider)
        if self.model is not None:
            clauses.append("(model = ? OR model_requested = ?)")
            params += [self.model, self.model]
        if self.client is not None:
            clauses.append("client = ?")
            params.append(self.client)
        return " AND ".join(clauses), params


async def summary(store: Store, filters: Filters) -> dict[str, Any]:
    where, params = filters.where()
    found = await store.fetch(
        "SELECT count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(input_tokens), sum(output_tokens),"
        f" sum(cached_tokens), sum(cost), avg(duration_ms) FROM usage_requests WHERE {where}",
        params,
    )
    requests, errors, input_tokens, output_tokens, cached, cost, avg = found[0]
    requests, input_tokens, output_tokens = int(requests or 0), int(input_tokens or 0), int(output_tokens or 0)
    p50, p95 = await _percentiles(store, where, params, requests)
    return {
        "requests": requests,
        "errors": int(errors or 0),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": int(cached or 0),
        "total_tokens": input_tokens + output_tokens,
        "cost": round(float(cost or 0.0), 6),
        "avg_duration_ms": _ms(avg),
        "p50_duration_ms": _ms(p50),
        "p95_duration_ms": _ms(p95),
    }


async def _percentiles(store: Store, where: str, params: list[Any], count: int) -> tuple[Any, Any]:
    """Nearest-rank p50 and p95 of the duration (the value at rank ceil(q * n)), the same in both stores."""
    if count == 0:
        return None, None
    if store.dialect == "postgresql":
        found = await store.fetch(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms),"
            f" percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM usage_requests WHERE {where}",
            params,
        )
        return found[0][0], found[0][1]
    values = []
    for q in (0.5, 0.95):
        # One value read per percentile: the database sorts, nothing but the answer leaves it.
        rank = max(math.ceil(q * count), 1)
        found = await store.fetch(
            f"SELECT duration_ms FROM usage_requests WHERE {where} ORDER BY duration_ms LIMIT 1 OFFSET ?",
            [*params, rank - 1],
        )
        values.append(found[0][0] if found else None)
    return values[0], values[1]


def _bucket_key(store: Store, group_by: GroupBy) -> str:
    seconds = _SECONDS.get(group_by)
    if seconds is None:
        # A request refused before routing has no model served: it counts under the name it asked for.
        return {"model": "coalesce(model, model_requested)", "provider": "provider", "client": "client"}[group_by]
    if store.dialect == "postgresql":
        return f"(floor(ts / {seconds}) * {seconds})::bigint"
    return f"CAST(ts / {seconds} AS INTEGER) * {seconds}"


async def buckets(store: Store, filters: Filters, group_by: GroupBy) -> list[dict[str, Any]]:
    """Totals per hour or day (oldest first, empty ones left out) or per model, provider or client (busiest first),
    at most MAX_BUCKETS."""
    seconds = _SECONDS.get(group_by)
    if seconds is not None and (filters.until - filters.since) / seconds > MAX_BUCKETS:
        raise QueryError(f"group_by={group_by} over this range gives more than {MAX_BUCKETS} buckets: narrow it")
    where, params = filters.where()
    key = _bucket_key(store, group_by)
    order = "1" if seconds is not None else "2 DESC, 1"
    found = await store.fetch(
        f"SELECT {key}, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(input_tokens),"
        f" sum(output_tokens), sum(cost), avg(duration_ms) FROM usage_requests WHERE {where}"
        f" GROUP BY 1 ORDER BY {order} LIMIT {MAX_BUCKETS}",
        params,
    )
    out = []
    for key_value, requests, errors, input_tokens, output_tokens, cost, avg in found:
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        bucket: dict[str, Any] = {"key": key_value}
        if seconds is not None:
            bucket = {"key": _iso(float(key_value)), "start": int(key_value)}
        bucket.update(
            requests=int(requests),
            errors=int(errors or 0),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            cost=round(float(cost or 0.0), 6),
            avg_duration_ms=_ms(avg),
        )
        out.append(bucket)
    return out


async def requests(
    store: Store, filters: Filters, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of rows, newest first, and the cursor of the next page (None on the last)."""
    limit = max(1, min(limit, MAX_ROWS))
    where, params = filters.where()
    if cursor is not None:
        ts, row_id = parse_cursor(cursor)
        where += " AND (ts < ? OR (ts = ? AND id < ?))"
        params += [ts, ts, row_id]
    found = await store.fetch(
        f"SELECT {', '.join(_LIST)} FROM usage_requests WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?",
        [*params, limit + 1],
    )
    rows = [_record(_LIST, r) for r in found[:limit]]
    more = len(found) > limit
    return rows, (f"{found[limit - 1][2]!r}_{found[limit - 1][0]}" if more else None)


def parse_cursor(cursor: str) -> tuple[float, int]:
    ts, _, row_id = cursor.partition("_")
    try:
        parsed = float(ts), int(row_id)
    except ValueError:
        raise QueryError("cursor: not a cursor this API gave (pass next_cursor back unchanged)") from None
    if not math.isfinite(parsed[0]):
        raise QueryError("cursor: not a cursor this API gave (pass next_cursor back unchanged)")
    return parsed


async def one(store: Store, request_id: str, client: str | None = None) -> dict[str, Any] | None:
    """The latest row with this request id (ids come from clients and may repeat), of `client` when given."""
    sql = f"SELECT {', '.join(_ONE)} FROM usage_requests WHERE request_id = ?"
    params: list[Any] = [request_id]
    if client is not None:
        sql += " AND client = ?"
        params.append(client)
    found = await store.fetch(sql + " ORDER BY id DESC LIMIT 1", params)
    if not found:
        return None
    record = _record(_ONE, found[0])
    record["tool_calls"] = await tool_calls(store, record["request_id"], record["ts"], record["duration_ms"])
    return record


# A tool call is matched to its request by the request's id and time window, widened by this much each side (the
# two are stamped by separate reads of the wall clock).
_SLACK = 1.0


async def tool_calls(store: Store, request_id: str, ts: float, duration_ms: float) -> list[dict[str, Any]]:
    """The MCP tool calls the gateway ran for one request, in the order they started (at most MAX_ROWS). Request
    ids may repeat: only the calls within this request's time are its."""
    found = await store.fetch(
        "SELECT ts, server, tool, outcome, duration_ms FROM usage_tool_calls"
        " WHERE request_id = ? AND ts >= ? AND ts <= ? ORDER BY ts, id LIMIT ?",
        [request_id, ts - _SLACK, ts + duration_ms / 1000.0 + _SLACK, MAX_ROWS],
    )
    return [
        {"time": _iso(float(at)), "server": server, "tool": tool, "outcome": outcome, "duration_ms": _ms(ms)}
        for at, server, tool, outcome, ms in found
    ]


def _record(columns: Sequence[str], values: Row) -> dict[str, Any]:
    record = dict(zip(columns, values, strict=True))
    record["time"] = _iso(float(record["ts"]))
    record["stream"] = bool(record["stream"])
    for name in ("metadata", "request_body", "response_body"):
        if record.get(name) is not None:
            record[name] = orjson.loads(record[name])
    return record


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
