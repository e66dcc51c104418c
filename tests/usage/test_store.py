"""The same suite over SQLite and a real PostgreSQL: migrations (from empty, from the previous version, two
replicas at once), writes, every query's figures, keyset pages and retention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.config.providers import index_table
from gateway.exchange import Usage
from gateway.usage import query
from gateway.usage.query import Filters, QueryError
from gateway.usage.record import Capture, row
from gateway.usage.schema import LATEST
from gateway.usage.store import Store, open_store
from tests.fakes.usage import BASE_TS, tool_row, usage_row

HOUR = 3600.0
ALL = Filters(BASE_TS, BASE_TS + 2 * HOUR)

ROWS = [
    usage_row(
        request_id="r1",
        ts=BASE_TS,
        client="a",
        duration_ms=10.0,
        input_tokens=100,
        output_tokens=20,
        cost=0.001,
        metadata='{"source": "external-client"}',
        end_user="u-1",
    ),
    usage_row(
        request_id="r2",
        ts=BASE_TS + 60,
        client="b",
        duration_ms=20.0,
        input_tokens=50,
        output_tokens=5,
        cost=0.0005,
        stream=True,
        ttft_ms=4.5,
    ),
    usage_row(
        request_id="r3",
        ts=BASE_TS + HOUR,
        client="a",
        provider="q",
        model="n",
        status=502,
        duration_ms=30.0,
        error_type="connect",
        retries=2,
    ),
    usage_row(
        request_id="r4",
        ts=BASE_TS + HOUR + 100,
        client="a",
        provider="q",
        model="n",
        model_requested="g",
        model_group="g",
        duration_ms=40.0,
        input_tokens=10,
        output_tokens=10,
        cached_tokens=5,
        fallbacks=1,
    ),
]


async def test_a_new_store_is_at_the_latest_version_and_opening_again_changes_nothing(
    store: Store, store_url: Callable[[], str]
) -> None:
    assert await store.version() == LATEST
    again = open_store(store_url())
    await again.open()
    try:
        assert await again.version() == LATEST
        applied = await again.fetch("SELECT version FROM usage_migrations ORDER BY version", [])
        assert applied == [(v,) for v in range(1, LATEST + 1)]
    finally:
        await again.close()


async def test_a_store_at_the_previous_version_is_migrated_and_keeps_its_rows(store_url: Callable[[], str]) -> None:
    old = open_store(store_url())
    try:
        assert await old.migrate(target=LATEST - 1) == LATEST - 1
        # A row as version 1 wrote it: no cached tokens, no bodies.
        await old.fetch(
            "INSERT INTO usage_requests (request_id, ts, route, operation, status, duration_ms, stream, retries,"
            " fallbacks, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ["old", BASE_TS, "/v1/chat/completions", "chat", 200, 12.5, False, 0, 0, 7, 3],
        )
    finally:
        await old.close()
    new = open_store(store_url())
    await new.open()
    try:
        assert await new.version() == LATEST
        found = await query.one(new, "old")
        assert found is not None
        assert (found["input_tokens"], found["output_tokens"], found["cached_tokens"]) == (7, 3, None)
        assert found["request_body"] is None
        await new.insert([usage_row(request_id="new", cached_tokens=2, request_body='{"model": "m"}')])
        again = await query.one(new, "new")
        assert again is not None and again["cached_tokens"] == 2 and again["request_body"] == {"model": "m"}
    finally:
        await new.close()


async def test_replicas_starting_together_apply_each_migration_once(store_url: Callable[[], str]) -> None:
    stores = [open_store(store_url()) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        applied = await stores[0].fetch("SELECT version FROM usage_migrations ORDER BY version", [])
        assert applied == [(v,) for v in range(1, LATEST + 1)]
    finally:
        for s in stores:
            await s.close()


async def test_summary_figures(store: Store) -> None:
    await store.insert(ROWS)
    assert await query.summary(store, ALL) == {
        "requests": 4,
        "errors": 1,
        "input_tokens": 160,
        "output_tokens": 35,
        "cached_tokens": 5,
        "total_tokens": 195,
        "cost": 0.0015,
        "avg_duration_ms": 25.0,
        # Nearest rank: the 2nd and the 4th of four.
        "p50_duration_ms": 20.0,
        "p95_duration_ms": 40.0,
    }


async def test_an_empty_range_sums_to_zero(store: Store) -> None:
    await store.insert(ROWS)
    empty = await query.summary(store, Filters(BASE_TS - 2 * HOUR, BASE_TS))
    assert empty["requests"] == 0 and empty["cost"] == 0.0 and empty["p95_duration_ms"] is None


@pytest.mark.parametrize(
    ("filters", "requests"),
    [
        (Filters(BASE_TS, BASE_TS + 2 * HOUR, provider="q"), 2),
        (Filters(BASE_TS, BASE_TS + 2 * HOUR, client="b"), 1),
        (Filters(BASE_TS, BASE_TS + 2 * HOUR, model="n"), 2),
        (Filters(BASE_TS, BASE_TS + 2 * HOUR, model="g"), 1),  # the name asked for matches too
        (Filters(BASE_TS, BASE_TS + 2 * HOUR, provider="p", client="a"), 1),
        (Filters(BASE_TS + 60, BASE_TS + HOUR), 1),  # since inclusive, until exclusive
    ],
)
async def test_filters(store: Store, filters: Filters, requests: int) -> None:
    await store.insert(ROWS)
    assert (await query.summary(store, filters))["requests"] == requests


async def test_hourly_and_daily_buckets(store: Store) -> None:
    await store.insert(ROWS)
    hourly = await query.buckets(store, ALL, "hour")
    assert [
        (b["key"], b["start"], b["requests"], b["errors"], b["input_tokens"], b["output_tokens"]) for b in hourly
    ] == [
        ("2027-01-15T08:00:00.000Z", int(BASE_TS), 2, 0, 150, 25),
        ("2027-01-15T09:00:00.000Z", int(BASE_TS + HOUR), 2, 1, 10, 10),
    ]
    assert hourly[0]["cost"] == 0.0015 and hourly[0]["avg_duration_ms"] == 15.0
    daily = await query.buckets(store, ALL, "day")
    assert [(b["key"], b["requests"], b["total_tokens"]) for b in daily] == [("2027-01-15T00:00:00.000Z", 4, 195)]


async def test_buckets_by_client_model_and_provider_busiest_first(store: Store) -> None:
    await store.insert(ROWS)
    assert [(b["key"], b["requests"]) for b in await query.buckets(store, ALL, "client")] == [("a", 3), ("b", 1)]
    assert [(b["key"], b["requests"]) for b in await query.buckets(store, ALL, "model")] == [("m", 2), ("n", 2)]
    assert [(b["key"], b["errors"]) for b in await query.buckets(store, ALL, "provider")] == [("p", 0), ("q", 1)]


async def test_too_many_time_buckets_is_refused(store: Store) -> None:
    with pytest.raises(QueryError, match="more than 1000 buckets"):
        await query.buckets(store, Filters(BASE_TS, BASE_TS + 1001 * HOUR), "hour")


async def test_rows_come_newest_first_in_keyset_pages(store: Store) -> None:
    # Two rows at the same instant: the page boundary between them loses neither.
    await store.insert([*ROWS, usage_row(request_id="r5", ts=BASE_TS + HOUR + 100)])
    first, cursor = await query.requests(store, ALL, 3)
    assert [r["request_id"] for r in first] == ["r5", "r4", "r3"]
    assert cursor is not None
    second, cursor = await query.requests(store, ALL, 3, cursor)
    assert [r["request_id"] for r in second] == ["r2", "r1"]
    assert cursor is None
    r1 = second[1]
    assert r1["metadata"] == {"source": "external-client"} and r1["end_user"] == "u-1"
    assert r1["time"] == "2027-01-15T08:00:00.000Z" and r1["stream"] is False and second[0]["stream"] is True
    assert second[0]["ttft_ms"] == 4.5


async def test_a_bad_cursor_is_refused(store: Store) -> None:
    with pytest.raises(QueryError, match="cursor"):
        await query.requests(store, ALL, 3, "nan_1")


async def test_one_request_by_id_latest_first_and_only_for_its_client(store: Store) -> None:
    await store.insert([*ROWS, usage_row(request_id="r3", ts=BASE_TS + 2, client="b", status=200)])
    latest = await query.one(store, "r3")
    assert latest is not None and latest["client"] == "b" and latest["status"] == 200
    own = await query.one(store, "r3", client="a")
    assert own is not None and own["status"] == 502 and own["error_type"] == "connect" and own["retries"] == 2
    assert await query.one(store, "r1", client="b") is None
    assert await query.one(store, "nope") is None


async def test_retention_deletes_only_older_rows(store: Store) -> None:
    await store.insert(ROWS)
    assert await store.delete_before(BASE_TS + HOUR, batch=1) == 2
    left = await query.requests(store, Filters(0, BASE_TS + 10 * HOUR), 10)
    assert [r["request_id"] for r in left[0]] == ["r4", "r3"]


async def test_client_text_with_nul_is_kept_without_it(store: Store) -> None:
    capture = Capture(
        "id\x00",
        BASE_TS,
        "c",
        "/v1/chat/completions",
        "chat",
        "p",
        "m\x00x",
        "m",
        None,
        None,
        200,
        None,
        0.01,
        None,
        Usage(1, 1),
        False,
        0,
        0,
        {"k": "v\x00"},
        "u\x00",
        None,
        None,
        None,
    )
    await store.insert([row(capture, index_table({}), lambda v: v)])
    found = await query.one(store, "id")
    assert found is not None and found["model_requested"] == "mx" and found["end_user"] == "u"
    assert found["metadata"] == {"k": "v\x00"}


TOOL_ROWS = [
    tool_row(request_id="r1", ts=BASE_TS + 0.002, tool="files__add", duration_ms=1.25),
    tool_row(request_id="r1", ts=BASE_TS + 0.004, tool="files__fail", outcome="error", duration_ms=2.5),
    tool_row(request_id="r2", ts=BASE_TS + 60.001, server="search", tool="search__find", outcome="timeout"),
    # The same request id, another request an hour later: not r1's.
    tool_row(request_id="r1", ts=BASE_TS + HOUR, tool="files__echo"),
]


async def test_a_requests_tool_calls_are_in_its_record(store: Store) -> None:
    await store.insert(ROWS, TOOL_ROWS)
    found = await query.one(store, "r1")
    assert found is not None
    assert found["tool_calls"] == [
        {
            "time": "2027-01-15T08:00:00.002Z",
            "server": "files",
            "tool": "files__add",
            "outcome": "ok",
            "duration_ms": 1.25,
        },
        {
            "time": "2027-01-15T08:00:00.004Z",
            "server": "files",
            "tool": "files__fail",
            "outcome": "error",
            "duration_ms": 2.5,
        },
    ]
    other = await query.one(store, "r2")
    assert other is not None and [(c["server"], c["outcome"]) for c in other["tool_calls"]] == [("search", "timeout")]
    none = await query.one(store, "r3")
    assert none is not None and none["tool_calls"] == []


async def test_a_batch_and_its_tool_calls_are_written_together_or_not_at_all(store: Store) -> None:
    bad = tool_row(request_id="r1", server=None)  # NOT NULL: the store refuses the batch
    with pytest.raises(Exception) as refused:
        await store.insert(ROWS[:1], [bad])
    assert not store.transient(refused.value)  # a bad batch: dropped, not retried forever
    assert await query.one(store, "r1") is None
    assert await store.fetch("SELECT count(*) FROM usage_tool_calls", []) == [(0,)]


async def test_retention_deletes_old_tool_calls_too(store: Store) -> None:
    await store.insert(ROWS, TOOL_ROWS)
    assert await store.delete_before(BASE_TS + HOUR) == 2
    left = await store.fetch("SELECT request_id, tool FROM usage_tool_calls ORDER BY ts", [])
    assert left == [("r1", "files__echo")]
