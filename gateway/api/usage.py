"""The usage API and page: `GET /v1/usage` (summary, buckets, a page of rows), `GET /v1/usage/export` (CSV),
`GET /v1/requests/{id}` (one request's record) and `GET /usage` (the page, which reads the API).

Who sees what: with client auth on, a client sees its own rows, a key or policy marked `admin` every client's;
with auth off the API answers only with USAGE_API_ENABLE (it would show everyone's usage and metadata).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from gateway.access import auth
from gateway.dialects import envelope
from gateway.errors import InvalidRequest, NotFound, StoreUnavailable
from gateway.runtime.state import STATE
from gateway.usage import query
from gateway.usage.query import GROUPS, Filters, GroupBy, QueryError
from gateway.usage.service import USAGE, Usage

_JSON = "application/json"
DEFAULT_WINDOW = 7 * 86400.0  # `since` when none is given: the last week
DEFAULT_ROWS = 50
DEFAULT_EXPORT = 10_000
MAX_EXPORT = 100_000
QUERY_TIMEOUT = 10.0
MAX_FILTER = 200


async def usage_summary(request: web.Request) -> web.Response:
    usage, client = _scope(request)
    params = request.query
    filters = _filters(params, client)
    group_by = _group_by(params.get("group_by"))
    include = {part.strip() for part in params.get("include", "").split(",") if part.strip()}
    if include - {"requests"}:
        raise InvalidRequest("include: only `requests` can be included")
    limit = _integer(params, "limit", DEFAULT_ROWS, query.MAX_ROWS)
    async with reading():
        body: dict[str, Any] = {
            "object": "usage",
            "since": _iso(filters.since),
            "until": _iso(filters.until),
            "filters": {name: getattr(filters, name) for name in ("provider", "model", "client")},
            "summary": await query.summary(usage.store, filters),
        }
        if group_by is not None:
            body["group_by"] = group_by
            body["buckets"] = await query.buckets(usage.store, filters, group_by)
        if "requests" in include:
            rows, cursor = await query.requests(usage.store, filters, limit, params.get("cursor"))
            body["requests"] = rows
            body["next_cursor"] = cursor
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def inference_usage(request: web.Request) -> web.Response:
    """Seed 001's `GET /api/v1/inference/usage` (`?provider=&since=&until=&limit=`): the summary and the latest
    requests in the Inference API's envelope and camelCase."""
    usage, client = _scope(request)
    filters = _filters(request.query, client)
    limit = _integer(request.query, "limit", DEFAULT_ROWS, query.MAX_ROWS)
    async with reading():
        summary = await query.summary(usage.store, filters)
        rows, _ = await query.requests(usage.store, filters, limit)
    data = {
        "summary": {
            "totalRequests": summary["requests"],
            "totalErrors": summary["errors"],
            "totalInputTokens": summary["input_tokens"],
            "totalOutputTokens": summary["output_tokens"],
            "totalTokens": summary["total_tokens"],
            "totalCost": summary["cost"],
            "avgDurationMs": None if summary["avg_duration_ms"] is None else round(summary["avg_duration_ms"]),
        },
        "requests": [_camel(r) for r in rows],
    }
    return web.Response(body=envelope.success(data), content_type=_JSON)


async def inference_request(request: web.Request) -> web.Response:
    """Seed 001's `GET /api/v1/inference/requests/{id}`: one request's record, in the envelope."""
    usage, client = _scope(request)
    request_id = request.match_info["id"][:MAX_FILTER]
    async with reading():
        found = await query.one(usage.store, request_id, client)
    if found is None:
        raise NotFound(f"no usage record for request id {request_id!r}")
    record = _camel(found)
    record["toolCalls"] = [{_camel_name(k): v for k, v in call.items()} for call in record["toolCalls"]]
    return web.Response(body=envelope.success(record), content_type=_JSON)


def _camel(row: dict[str, Any]) -> dict[str, Any]:
    """A row in the Inference API's camelCase: `request_id` -> `requestId` (the row's own `id` stays out)."""
    return {_CAMEL.get(k) or _camel_name(k): v for k, v in row.items() if k != "id"}


_CAMEL = {"request_id": "id", "time": "createdAt", "ts": "timestamp", "end_user": "user", "model_group": "group"}


def _camel_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def request_record(request: web.Request) -> web.Response:
    usage, client = _scope(request)
    request_id = request.match_info["id"]
    async with reading():
        found = await query.one(usage.store, request_id[:MAX_FILTER], client)
    if found is None:
        raise NotFound(f"no usage record for request id {request_id[:MAX_FILTER]!r}")
    return web.Response(body=orjson.dumps(found), content_type=_JSON)


# The CSV's columns: a row's fields, metadata as JSON text.
EXPORT_COLUMNS = (
    "time",
    "request_id",
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
    "end_user",
    "metadata",
)


async def usage_export(request: web.Request) -> web.StreamResponse:
    """The rows of a filtered query as CSV, newest first, written page by page as they are read (at most `limit`)."""
    usage, client = _scope(request)
    filters = _filters(request.query, client)
    limit = _integer(request.query, "limit", DEFAULT_EXPORT, MAX_EXPORT)
    # The first page is read before the answer starts, so a failing store is still an error envelope.
    async with reading():
        rows, cursor = await query.requests(usage.store, filters, min(limit, query.MAX_ROWS))
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": 'attachment; filename="usage.csv"'}
    )
    await response.prepare(request)
    await response.write(_csv([EXPORT_COLUMNS]))
    sent = 0
    while True:
        await response.write(_csv([[_cell(r.get(name)) for name in EXPORT_COLUMNS] for r in rows]))
        sent += len(rows)
        if cursor is None or sent >= limit:
            break
        async with reading():
            rows, cursor = await query.requests(usage.store, filters, min(limit - sent, query.MAX_ROWS), cursor)
    await response.write_eof()
    return response


def _csv(rows: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


# A cell starting with one of these is a formula to a spreadsheet: client text (metadata, user, model) could run one.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = orjson.dumps(value).decode()
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


async def usage_page(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


# The page loads nothing from elsewhere: its script and styles are inline, its data from this gateway's API.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
    " connect-src 'self'; img-src 'self' data:",
    "Cache-Control": "no-store",
}


@functools.cache
def _page() -> bytes:
    return resources.files("gateway.api").joinpath("static/usage.html").read_bytes()


# --- who sees what, and the parameters -------------------------------------------------------------------------


def _scope(request: web.Request) -> tuple[Usage, str | None]:
    """The usage state, and the client whose rows the caller may see (None: every client's, or `?client=`)."""
    usage = request.app.get(USAGE)
    if usage is None:
        raise NotFound("the usage store is off: set USAGE_STORE (a SQLite file or a postgresql:// URL)")
    if not request.app[STATE].settings.auth_enable:
        if not usage.api_enable:
            raise NotFound(
                "the usage API is off: client auth is off, so it would show every client's usage;"
                " set USAGE_API_ENABLE=true to serve it anyway, or turn AUTH_ENABLE on"
            )
        client = None
    else:
        caller = request.get(auth.CLIENT)
        client = None if caller is not None and caller.policy.admin else (caller.name if caller else "")
    if not usage.ready:
        raise StoreUnavailable("the usage store is not open yet; try again shortly")
    return usage, client


@asynccontextmanager
async def reading() -> AsyncIterator[None]:
    """A store that is down or slow is a 503, never a hung request or a stack trace."""
    try:
        async with asyncio.timeout(QUERY_TIMEOUT):
            yield
    except QueryError as exc:
        raise InvalidRequest(str(exc)) from None
    except TimeoutError:
        raise StoreUnavailable("the usage store did not answer in time") from None
    except (OSError, ConnectionError) as exc:
        raise StoreUnavailable(f"the usage store is unavailable ({type(exc).__name__})") from None
    except Exception as exc:
        if _is_store_error(exc):
            raise StoreUnavailable(f"the usage store failed ({type(exc).__name__})") from None
        raise


def _is_store_error(exc: BaseException) -> bool:
    # The drivers' own error trees, told apart by module (neither is imported here: the stores own them).
    module = type(exc).__module__
    return module.startswith(("sqlite3", "asyncpg", "aiosqlite"))


def _filters(params: Any, client: str | None) -> Filters:
    now = time.time()
    until = _time(params, "until", now)
    since = _time(params, "since", until - DEFAULT_WINDOW)
    if since >= until:
        raise InvalidRequest("since must be before until")
    values = {name: _text(params, name) for name in ("provider", "model", "client")}
    if client is not None:
        values["client"] = client  # a client that is not admin sees its own rows, whatever it asks
    return Filters(since, until, **values)


def _text(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_FILTER:
        raise InvalidRequest(f"{name}: longer than {MAX_FILTER} characters")
    return str(value)


def _time(params: Any, name: str, default: float) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise) or epoch seconds."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidRequest(
                f"{name}: {raw[:40]!r} is neither an ISO 8601 date or time nor epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise InvalidRequest(f"{name}: out of range")
    return value


def _group_by(value: str | None) -> GroupBy | None:
    if value is None or value == "":
        return None
    for group in GROUPS:
        if value == group:
            return group
    raise InvalidRequest(f"group_by: {value[:40]!r} is not one of {', '.join(GROUPS)}")


def _integer(params: Any, name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: {raw[:40]!r} is not an integer") from None
    if not 1 <= value <= maximum:
        raise InvalidRequest(f"{name}: must be between 1 and {maximum}")
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
