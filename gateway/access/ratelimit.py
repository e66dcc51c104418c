"""Per-client request and token budgets: token buckets that refill continuously over a window (a minute), kept
in process memory or, with REDIS_URL, in Redis so that every replica spends one budget.

A request takes one request token and needs a token budget above zero. A request whose body names a model then
reserves the tokens it may use (its input, estimated, and its output allowance) under the same rule, so
concurrent requests cannot all pass on one budget; when it ends, the reservation is settled against the usage the
answer reported (a refund or a further charge), so the budget may go below zero and then blocks until it has
refilled. Both limiters run the same
arithmetic: `_step` here, and the same steps in the Lua script that Redis runs atomically per check.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = structlog.get_logger("gateway.ratelimit")

WINDOW = 60.0
REDIS_PREFIX = "gateway:ratelimit:"
# Above this many clients in memory, buckets that have refilled completely are dropped (they equal a new one).
_PRUNE_ABOVE = 10_000
# Redis keeps a bucket's level to 14 significant digits: comparisons allow for that much float dust.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Quota:
    """A client's limits per window; None means that dimension is not limited."""

    requests: int | None = None
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    remaining: int
    reset: float  # seconds until the bucket is full again


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    requests: Window | None = None
    tokens: Window | None = None
    retry_after: float = 0.0  # seconds, when refused
    unavailable: bool = False  # the shared store could not decide and the policy is to fail closed

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers (and Retry-After when refused)."""
        out: dict[str, str] = {}
        for kind, window in (("requests", self.requests), ("tokens", self.tokens)):
            if window is not None:
                out[f"x-ratelimit-limit-{kind}"] = str(window.limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(window.remaining)
                out[f"x-ratelimit-reset-{kind}"] = format_reset(window.reset)
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(round(self.retry_after, 3))))
        return out


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it (Go style): `20ms`, `1s`, `6m0s`, `1h2m3.5s`."""
    total_ms = max(0, math.ceil(round(seconds * 1000, 3)))  # rounding first: float dust is not a millisecond
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(slots=True)
class _Bucket:
    requests: float
    tokens: float
    at: float


def _step(
    bucket: _Bucket | None, quota: Quota, now: float, window: float, take: bool, spend: int, reserve: bool = False
) -> tuple[_Bucket, bool]:
    """Refill to `now`, then take one request (when `take` and allowed) and spend `spend` tokens (a negative spend
    refunds, up to a full bucket). `reserve`: spend only while the token budget is above zero, else refuse."""
    rlimit, tlimit = quota.requests or 0, quota.tokens or 0
    if bucket is None:
        bucket = _Bucket(float(rlimit), float(tlimit), now)
    elapsed = max(0.0, now - bucket.at)
    requests = min(rlimit, bucket.requests + elapsed * rlimit / window) if rlimit else 0.0
    tokens = min(tlimit, bucket.tokens + elapsed * tlimit / window) if tlimit else 0.0
    allowed = True
    if take:
        if (rlimit and requests < 1 - _EPS) or (tlimit and tokens < _EPS):
            allowed = False
        elif rlimit:
            requests -= 1
    if reserve and tlimit and tokens < _EPS:
        allowed = False
    elif tlimit:
        # A debt is at most one window's worth: whatever an answer reported, the budget is back within a window.
        tokens = min(tlimit, max(tokens - spend, 1.0 - tlimit))
    return _Bucket(requests, tokens, now), allowed


def _decide(quota: Quota, requests: float, tokens: float, allowed: bool, window: float) -> Decision:
    rwin = twin = None
    retry = 0.0
    if quota.requests:
        rate = quota.requests / window
        rwin = Window(quota.requests, _whole(requests), (quota.requests - requests) / rate)
        if requests < 1 - _EPS:
            retry = max(retry, (1 - requests) / rate)
    if quota.tokens:
        rate = quota.tokens / window
        twin = Window(quota.tokens, _whole(tokens), (quota.tokens - tokens) / rate)
        if tokens < _EPS:
            # The budget must be above zero again: a little past the moment it reaches it.
            retry = max(retry, -tokens / rate + 1 / rate)
    return Decision(allowed, rwin, twin, 0.0 if allowed else retry)


def _whole(level: float) -> int:
    """What is left, in whole units; Redis keeps 14 significant digits, so 2.99999999999999 counts as 3."""
    return max(0, math.floor(level + _EPS))


class Limiter(Protocol):
    async def acquire(self, client: str, quota: Quota) -> Decision:
        """Take one request from `client`'s budget, or refuse."""

    async def charge(self, client: str, quota: Quota, tokens: int) -> None:
        """Spend the tokens an answer used (negative: give back part of a reservation)."""

    async def reserve(self, client: str, quota: Quota, tokens: int) -> Decision:
        """Spend `tokens` ahead of an answer while the budget is above zero, or refuse."""

    async def close(self) -> None: ...


class Clock(Protocol):
    """Wall-clock seconds (time.time): replicas sharing Redis compare their times, so keep them NTP-synced."""

    def __call__(self) -> float: ...


class MemoryLimiter:
    """Budgets in this process: right for a sidecar or a single replica."""

    def __init__(self, *, window: float = WINDOW, clock: Clock = time.time) -> None:
        self.window = window
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, client: str, quota: Quota) -> Decision:
        return self.acquire_now(client, quota)

    def acquire_now(self, client: str, quota: Quota) -> Decision:
        now = self.clock()
        if len(self._buckets) > _PRUNE_ABOVE:
            self._prune(now)
        bucket, allowed = _step(self._buckets.get(client), quota, now, self.window, True, 0)
        self._buckets[client] = bucket
        return _decide(quota, bucket.requests, bucket.tokens, allowed, self.window)

    async def charge(self, client: str, quota: Quota, tokens: int) -> None:
        self.charge_now(client, quota, tokens)

    async def reserve(self, client: str, quota: Quota, tokens: int) -> Decision:
        return self.reserve_now(client, quota, tokens)

    def reserve_now(self, client: str, quota: Quota, tokens: int) -> Decision:
        bucket, allowed = _step(self._buckets.get(client), quota, self.clock(), self.window, False, tokens, True)
        self._buckets[client] = bucket
        return _decide(quota, bucket.requests, bucket.tokens, allowed, self.window)

    def charge_now(self, client: str, quota: Quota, tokens: int) -> None:
        self._buckets[client], _ = _step(self._buckets.get(client), quota, self.clock(), self.window, False, tokens)

    def _prune(self, now: float) -> None:
        # A bucket untouched for a whole window (and not in debt) has refilled: forgetting it changes nothing.
        stale = [k for k, b in self._buckets.items() if now - b.at > self.window and b.tokens >= 0]
        for key in stale:
            del self._buckets[key]

    async def close(self) -> None:
        self._buckets.clear()


# The same steps as `_step` and the expiry of a bucket once it would be full again. Time in milliseconds.
_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rlimit = tonumber(ARGV[3])
local tlimit = tonumber(ARGV[4])
local take = tonumber(ARGV[5])
local spend = tonumber(ARGV[6])
local reserve = tonumber(ARGV[7])
local state = redis.call('HMGET', KEYS[1], 'r', 't', 'at')
local r = tonumber(state[1]) or rlimit
local t = tonumber(state[2]) or tlimit
local at = tonumber(state[3]) or now
local elapsed = math.max(0, now - at)
if rlimit > 0 then r = math.min(rlimit, r + elapsed * rlimit / window) else r = 0 end
if tlimit > 0 then t = math.min(tlimit, t + elapsed * tlimit / window) else t = 0 end
local allowed = 1
if take > 0 then
  if (rlimit > 0 and r < 1 - 1e-9) or (tlimit > 0 and t < 1e-9) then
    allowed = 0
  elseif rlimit > 0 then
    r = r - 1
  end
end
if reserve > 0 and tlimit > 0 and t < 1e-9 then
  allowed = 0
elseif tlimit > 0 then
  t = math.min(tlimit, math.max(t - spend, 1 - tlimit))
end
local until_full = 0
if rlimit > 0 then until_full = math.max(until_full, (rlimit - r) / rlimit) end
if tlimit > 0 then until_full = math.max(until_full, (tlimit - t) / tlimit) end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(until_full * window) + 1000)
return {allowed, tostring(r), tostring(t)}
"""


@dataclass(slots=True)
class RedisHealth:
    """What the metrics read: Redis failures, decisions made without Redis, and whether it is reachable now."""

    errors: int = 0
    degraded_decisions: int = 0
    up: bool = True
    fail_open: bool = True


class RedisLimiter:
    """Budgets shared by every replica through one Redis (one Lua script call per check).

    When Redis fails or does not answer within `timeout`, a circuit opens for `retry_interval` seconds: no request
    waits on Redis in that time. Failing open, each replica then limits on its own in memory (so the cluster may
    spend up to N budgets); failing closed, limited clients get 503. A single probe request closes the circuit.
    """

    def __init__(
        self,
        url: str,
        *,
        fail_open: bool = True,
        timeout: float = 0.25,
        retry_interval: float = 5.0,
        window: float = WINDOW,
        clock: Clock = time.time,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        self.window = window
        self.clock = clock
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.health = RedisHealth(fail_open=fail_open)
        self.fallback = MemoryLimiter(window=window, clock=clock)
        # No client-side retries: a slow Redis must cost a request at most one short time-out.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._script = self._redis.register_script(_LUA)
        self._open_until: float | None = None
        self._probing = False

    async def acquire(self, client: str, quota: Quota) -> Decision:
        result = await self._call(client, quota, take=True, spend=0)
        if result is None:
            return self._degraded(lambda: self.fallback.acquire_now(client, quota))
        allowed, requests, tokens = result
        return _decide(quota, requests, tokens, allowed, self.window)

    async def reserve(self, client: str, quota: Quota, tokens: int) -> Decision:
        result = await self._call(client, quota, take=False, spend=tokens, reserve=True)
        if result is None:
            return self._degraded(lambda: self.fallback.reserve_now(client, quota, tokens))
        allowed, requests, level = result
        return _decide(quota, requests, level, allowed, self.window)

    def _degraded(self, local: Callable[[], Decision]) -> Decision:
        self.health.degraded_decisions += 1
        if self.health.fail_open:
            return local()
        return Decision(False, retry_after=self.retry_interval, unavailable=True)

    async def charge(self, client: str, quota: Quota, tokens: int) -> None:
        if await self._call(client, quota, take=False, spend=tokens) is None and self.health.fail_open:
            self.fallback.charge_now(client, quota, tokens)

    async def _call(
        self, client: str, quota: Quota, *, take: bool, spend: int, reserve: bool = False
    ) -> tuple[bool, float, float] | None:
        """The script's answer, or None while Redis is out of reach (the circuit is open)."""
        now = time.monotonic()
        if self._open_until is not None and (now < self._open_until or self._probing):
            return None
        probing = self._open_until is not None
        self._probing = probing
        args = [
            round(self.clock() * 1000),
            round(self.window * 1000),
            quota.requests or 0,
            quota.tokens or 0,
            1 if take else 0,
            spend,
            1 if reserve else 0,
        ]
        try:
            # The socket time-outs bound each read; this bounds the whole call (connect, script load, answer).
            async with asyncio.timeout(self.timeout * 2):
                reply = await self._script(keys=[self.prefix + client], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._trip(exc)
            return None
        finally:
            self._probing = False
        if self._open_until is not None:
            self._open_until = None
            self.health.up = True
            log.info("redis reachable again: rate limits are shared again")
        allowed, requests, tokens = reply
        return bool(int(allowed)), float(requests), float(tokens)

    def _trip(self, exc: BaseException) -> None:
        self.health.errors += 1
        was_up = self._open_until is None
        self._open_until = time.monotonic() + self.retry_interval
        self.health.up = False
        if was_up:
            policy = "fail open: each replica limits on its own" if self.health.fail_open else "fail closed: 503"
            log.warning(
                "redis unreachable: rate limits " + policy,
                error=type(exc).__name__,
                retry_in=self.retry_interval,
            )

    async def close(self) -> None:
        await self._redis.aclose()


class LimiterCollector:
    """A Prometheus collector for the Redis limiter's health, for the app's own registry."""

    def __init__(self, health: RedisHealth, namespace: str = "llmgw") -> None:
        self.health = health
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            f"{self.namespace}_ratelimit_redis_errors", "Rate-limit checks that failed or timed out on Redis."
        )
        errors.add_metric([], self.health.errors)
        degraded = CounterMetricFamily(
            f"{self.namespace}_ratelimit_degraded_decisions",
            "Rate-limit decisions made without Redis (local limits when failing open, 503 when failing closed).",
            labels=["policy"],
        )
        degraded.add_metric(["open" if self.health.fail_open else "closed"], self.health.degraded_decisions)
        up = GaugeMetricFamily(f"{self.namespace}_ratelimit_redis_up", "1 while Redis answers rate-limit checks.")
        up.add_metric([], 1 if self.health.up else 0)
        yield from (errors, degraded, up)
