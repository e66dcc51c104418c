"""Per-provider call policy: the time limits and retry rules of upstream calls, resolved once per table load from
the CLIENT_* settings and the table's `timeouts:` / `retries:` overrides, so a request only looks them up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from gateway.config.providers import Provider, ProviderTable, RetryOverrides, TimeoutOverrides
from gateway.config.settings import Settings

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Limits:
    """Time limits of one upstream call.

    `headers` bounds each attempt's wait for the response head; `whole` (when set) bounds the call from its start
    to the last byte; `idle` (when set) bounds each silence once the body flows; `budget` is the time from the
    start within which a retry may still begin; `connect` bounds opening a connection.
    """

    headers: float
    whole: float | None
    idle: float | None
    budget: float
    connect: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before another attempt; only ever before the client has received a byte."""

    max_retries: int = 0
    backoff: float = 0.25
    backoff_max: float = 4.0
    retry_after_max: float = 20.0

    def backoff_delay(self, retry: int) -> float:
        """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^retry)]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff * (2**retry)))

    def delay(self, retry: int, headers: Mapping[str, str] | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None when no retry may follow.

        A provider's Retry-After (or retry-after-ms) is honoured as given, unless it asks for longer than
        `retry_after_max`: then the answer goes to the client as it is.
        """
        if retry >= self.max_retries:
            return None
        asked = retry_after(headers) if headers is not None else None
        if asked is None:
            return self.backoff_delay(retry)
        return asked if asked <= self.retry_after_max else None


NO_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Everything one provider's calls need: limits for a non-streamed chat, a stream, a raw proxy call."""

    chat: Limits
    stream: Limits
    proxy: Limits
    retry: RetryPolicy

    def limits(self, stream: bool) -> Limits:
        return self.stream if stream else self.chat


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a provider asked for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def policy_for(settings: Settings, provider: Provider) -> CallPolicy:
    return _resolve(settings, provider.timeouts, provider.retries)


def call_policies(settings: Settings, table: ProviderTable) -> dict[str, CallPolicy]:
    """One CallPolicy per provider id; built when a table is loaded or reloaded, never per request."""
    return {pid: policy_for(settings, provider) for pid, provider in table.providers.items()}


def _resolve(settings: Settings, timeouts: TimeoutOverrides, retries: RetryOverrides | None = None) -> CallPolicy:
    connect = timeouts.connect or settings.connect_timeout
    headers = timeouts.response_header or settings.response_header_timeout
    total = timeouts.total or settings.client_timeout
    idle = timeouts.stream_idle or settings.stream_idle_timeout
    retries = retries or RetryOverrides()
    return CallPolicy(
        # A non-streamed answer sends its head only when it is complete, so `total` bounds the head as well.
        chat=Limits(headers=total, whole=total, idle=None, budget=total, connect=connect),
        # A stream that keeps sending is never cut: only the wait for its head and its silences are limited.
        stream=Limits(headers=headers, whole=None, idle=idle, budget=total, connect=connect),
        # A raw call may be a slow whole answer or a stream: wait long for the head, then limit silences.
        proxy=Limits(headers=total, whole=None, idle=idle, budget=total, connect=connect),
        retry=RetryPolicy(
            max_retries=settings.max_retries if retries.max_retries is None else retries.max_retries,
            backoff=retries.backoff or settings.retry_backoff,
            backoff_max=retries.backoff_max or settings.retry_backoff_max,
            retry_after_max=retries.retry_after_max or settings.retry_after_max,
        ),
    )
