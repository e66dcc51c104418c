"""Rate limits: the in-memory and the Redis limiter against one real Redis-protocol server on a loopback port,
two gateways sharing one budget, and Redis stopped mid-test (failing open, then closed)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from gateway.access.auth import ACCESS
from gateway.access.ratelimit import (
    Decision,
    LimiterCollector,
    MemoryLimiter,
    Quota,
    RedisLimiter,
    Window,
    format_reset,
)
from tests.fakes.access import FakeClock, RedisServer, write_keys
from tests.fakes.bodies import chat
from tests.fakes.gateways import auth_settings, gateway_app
from tests.fakes.net import free_port
from tests.fakes.tables import access_table

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.0201, "21ms"), (1, "1s"), (1.5, "1.5s"), (59.9991, "1m0s"), (360, "6m0s"), (3723.5, "1h2m3.5s")],
)
def test_reset_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_decision_headers() -> None:
    refused = Decision(False, Window(60, 0, 1.0), Window(1000, 0, 12.25), retry_after=1.2)
    assert refused.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "12.25s",
        "Retry-After": "2",
    }
    assert Decision(True, None, Window(5, 5, 0)).headers() == {
        "x-ratelimit-limit-tokens": "5",
        "x-ratelimit-remaining-tokens": "5",
        "x-ratelimit-reset-tokens": "0ms",
    }


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[MemoryLimiter | RedisLimiter]:
    if request.param == "memory":
        yield MemoryLimiter(clock=clock)
        return
    server = request.getfixturevalue("redis_server")
    made = RedisLimiter(server.url, clock=clock, retry_interval=3600)
    yield made
    assert made.health.errors == 0
    await made.close()


async def test_request_budget_refills_over_the_window(limiter: Any, clock: FakeClock) -> None:
    quota = Quota(requests=3)
    remaining = [(await limiter.acquire("a", quota)).requests.remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = await limiter.acquire("a", quota)
    assert (refused.allowed, refused.retry_after, refused.requests) == (False, 20.0, Window(3, 0, 60.0))
    assert (await limiter.acquire("b", quota)).allowed  # budgets are per client
    clock.advance(19.9)
    assert not (await limiter.acquire("a", quota)).allowed
    clock.advance(0.1)
    allowed = await limiter.acquire("a", quota)
    assert allowed.allowed and allowed.requests == Window(3, 0, 60.0)
    clock.advance(600)  # never more than the limit
    assert (await limiter.acquire("a", quota)).requests == Window(3, 2, 20.0)


async def test_token_budget_is_charged_after_the_answer(limiter: Any, clock: FakeClock) -> None:
    quota = Quota(tokens=100)
    assert (await limiter.acquire("a", quota)).tokens == Window(100, 100, 0.0)
    await limiter.charge("a", quota, 130)  # more than the budget: it goes into debt
    refused = await limiter.acquire("a", quota)
    assert not refused.allowed and refused.tokens == Window(100, 0, 78.0)
    assert refused.retry_after == pytest.approx(18.6)
    clock.advance(18.6)
    assert (await limiter.acquire("a", quota)).allowed


async def test_a_debt_is_at_most_one_window(limiter: Any, clock: FakeClock) -> None:
    """A provider reporting a million tokens cannot lock a key out for days: the budget is back within a window."""
    quota = Quota(tokens=100)
    await limiter.acquire("a", quota)
    await limiter.charge("a", quota, 1_000_000)
    refused = await limiter.acquire("a", quota)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(60.0)
    assert refused.headers()["Retry-After"] == "60"
    clock.advance(60.0)
    assert (await limiter.acquire("a", quota)).allowed


async def test_a_reservation_is_refused_once_the_budget_is_spent_and_settles_exactly(
    limiter: Any, clock: FakeClock
) -> None:
    """Reserved before the answer (so concurrent requests see each other), settled after it: a refund of what was
    not used, never above a full bucket."""
    quota = Quota(tokens=100)
    first = await limiter.reserve("a", quota, 60)
    assert first.allowed and first.tokens == Window(100, 40, 36.0)
    second = await limiter.reserve("a", quota, 60)  # 40 left: admitted, into debt
    assert second.allowed and second.tokens == Window(100, 0, 72.0)
    third = await limiter.reserve("a", quota, 1)
    assert not third.allowed and third.retry_after == pytest.approx(12.6)
    assert not (await limiter.acquire("a", quota)).allowed  # the check at the door agrees
    await limiter.charge("a", quota, 12 - 60)  # the first used 12 of its 60
    await limiter.charge("a", quota, 30 - 60)  # the second 30
    assert (await limiter.acquire("a", quota)).tokens == Window(100, 58, 25.2)  # 100 - 12 - 30
    await limiter.charge("a", quota, -1_000)  # a refund never overfills
    assert (await limiter.acquire("a", quota)).tokens == Window(100, 100, 0.0)


async def test_redis_and_memory_make_the_same_decisions(redis_server: RedisServer) -> None:
    """The Lua script and the Python steps are one algorithm: a seeded random walk must agree step by step."""
    clock = FakeClock()
    memory = MemoryLimiter(clock=clock)
    shared = RedisLimiter(redis_server.url, clock=clock)
    rng = random.Random(5)
    quota = Quota(requests=5, tokens=300)
    try:
        for _ in range(200):
            clock.advance(rng.choice([0, 0, 0.5, 3, 11]))
            client = rng.choice(["a", "b"])
            if rng.random() < 0.3:
                spend = rng.randrange(-150, 200)
                await memory.charge(client, quota, spend)
                await shared.charge(client, quota, spend)
                continue
            if rng.random() < 0.3:
                hold = rng.randrange(0, 300)
                mine, theirs = await memory.reserve(client, quota, hold), await shared.reserve(client, quota, hold)
                assert (mine.allowed, mine.headers()) == (theirs.allowed, theirs.headers())
                continue
            mine, theirs = await memory.acquire(client, quota), await shared.acquire(client, quota)
            assert mine.allowed == theirs.allowed
            assert mine.headers() == theirs.headers()
        assert shared.health.errors == 0
    finally:
        await shared.close()


# --- through the gateway ----------------------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Any:
    return write_keys(
        tmp_path, {"limited": {"policy": "three"}, "free-for-all": {}}, {"three": {"requests_per_minute": 3}}
    )


async def _pair(aiohttp_client: Any, upstream_url: str, keys: Any, clock: FakeClock, **extra: Any) -> list[Client]:
    """Two replicas behind one imaginary load balancer, on one Redis and one clock."""
    settings = auth_settings(auth_keys_file=str(keys.path), **extra)
    return [await aiohttp_client(gateway_app(settings, access_table(upstream_url), clock)) for _ in range(2)]


async def test_two_gateways_share_one_budget(
    aiohttp_client: Any, upstream_url: str, keys: Any, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    a, b = await _pair(aiohttp_client, upstream_url, keys, clock, redis_url=redis_server.url)
    headers = {"X-API-Key": keys.key("limited")}
    statuses = []
    for gw in (a, b, a, b):
        response = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
        statuses.append((response.status, response.headers.get("x-ratelimit-remaining-requests")))
    assert statuses == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
    clock.advance(20)
    assert (await a.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)).status == 200
    assert (await b.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)).status == 429


async def test_without_redis_each_gateway_has_its_own_budget(aiohttp_client: Any, upstream_url: str, keys: Any) -> None:
    a, b = await _pair(aiohttp_client, upstream_url, keys, FakeClock())
    headers = {"X-API-Key": keys.key("limited")}
    for gw in (a, b):
        assert [(await gw.get("/v1/models", headers=headers)).status for _ in range(4)] == [200, 200, 200, 429]


async def test_redis_stopped_mid_test_fails_open_then_recovers(
    aiohttp_client: Any, upstream_url: str, keys: Any, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    a, b = await _pair(aiohttp_client, upstream_url, keys, clock, redis_url=redis_server.url, redis_retry_interval=3600)
    headers = {"X-API-Key": keys.key("limited")}
    assert (await a.get("/v1/models", headers=headers)).status == 200
    assert (await b.get("/v1/models", headers=headers)).status == 200
    redis_server.stop()
    with structlog.testing.capture_logs() as logs:
        # Each replica now limits on its own, from a full budget: 3 more each, then 429.
        served_a = [(await a.get("/v1/models", headers=headers)).status for _ in range(4)]
        served_b = [(await b.get("/v1/models", headers=headers)).status for _ in range(4)]
    assert served_a == served_b == [200, 200, 200, 429]
    warnings = [e for e in logs if e["event"].startswith("redis unreachable")]
    assert [(e["event"], e["log_level"]) for e in warnings] == [
        ("redis unreachable: rate limits fail open: each replica limits on its own", "warning")
    ] * 2
    limiter = a.app[ACCESS].limiter
    assert isinstance(limiter, RedisLimiter)
    # The circuit opened on the first failure: one error, then no request went to the dead Redis.
    assert (limiter.health.errors, limiter.health.degraded_decisions, limiter.health.up) == (1, 4, False)
    registry = CollectorRegistry()
    registry.register(LimiterCollector(limiter.health))
    text = generate_latest(registry).decode()
    assert "llmgw_ratelimit_redis_errors_total 1.0" in text
    assert 'llmgw_ratelimit_degraded_decisions_total{policy="open"} 4.0' in text
    assert "llmgw_ratelimit_redis_up 0.0" in text
    # Redis comes back (empty); the next check after the retry interval probes it and sharing resumes.
    redis_server.start()
    limiter.retry_interval = 0
    limiter._open_until = 0.0  # the interval has passed
    with structlog.testing.capture_logs() as logs:
        assert (await a.get("/v1/models", headers=headers)).headers["x-ratelimit-remaining-requests"] == "2"
    assert [e["event"] for e in logs if e["event"] != "request"] == [
        "redis reachable again: rate limits are shared again"
    ]
    assert limiter.health.up and limiter.health.errors == 1


async def test_a_hung_redis_costs_one_time_out_then_the_circuit_opens(
    aiohttp_client: Any, upstream_url: str, keys: Any, redis_server: RedisServer
) -> None:
    (gw, _) = await _pair(
        aiohttp_client, upstream_url, keys, FakeClock(), redis_url=redis_server.url, redis_retry_interval=3600
    )
    headers = {"X-API-Key": keys.key("limited")}
    assert (await gw.get("/v1/models", headers=headers)).status == 200  # connected, script loaded
    redis_server.pause()
    try:
        statuses = [(await gw.get("/v1/models", headers=headers)).status for _ in range(5)]
    finally:
        redis_server.resume()
    # Failing open from a fresh local budget of 3; only the first check waited for Redis, and timed out.
    assert statuses == [200, 200, 200, 429, 429]
    limiter = gw.app[ACCESS].limiter
    assert isinstance(limiter, RedisLimiter)
    assert (limiter.health.errors, limiter.health.degraded_decisions) == (1, 5)


async def test_redis_down_fails_closed_when_told_to(
    aiohttp_client: Any, upstream_url: str, keys: Any, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    (gw, _) = await _pair(
        aiohttp_client,
        upstream_url,
        keys,
        clock,
        redis_url=redis_server.url,
        ratelimit_fail_open=False,
        redis_retry_interval=7,
    )
    redis_server.stop()
    response = await gw.post(
        "/v1/chat/completions", json=chat("fake/alpha-1"), headers={"X-API-Key": keys.key("limited")}
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert orjson.loads(await response.read()) == {
        "error": {
            "message": "rate limits cannot be checked now; try again shortly",
            "type": "server_error",
            "code": "rate_limiter_unavailable",
        }
    }
    # A client without limits never needs Redis.
    unlimited = await gw.post(
        "/v1/chat/completions", json=chat("fake/alpha-1"), headers={"X-API-Key": keys.key("free-for-all")}
    )
    assert unlimited.status == 200


async def test_redis_unreachable_from_the_start_does_not_stop_the_gateway(
    aiohttp_client: Any, upstream_url: str, keys: Any
) -> None:
    (gw, _) = await _pair(aiohttp_client, upstream_url, keys, FakeClock(), redis_url=f"redis://127.0.0.1:{free_port()}")
    assert (await gw.get("/health")).status == 200
    assert (await gw.get("/v1/models", headers={"X-API-Key": keys.key("limited")})).status == 200
