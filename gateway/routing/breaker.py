"""A deployment's circuit breaker: closed, open after consecutive failures or a failure rate over a window, half-open
once its time is up (one probe goes through), closed again when the probe succeeds, open for longer when it fails.

`blocked_until` is the whole hot-path test: 0 when closed, the end of the open spell when open, infinity while a
probe is in flight; a deployment takes traffic when the clock has reached it.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

import structlog

log = structlog.get_logger("gateway.routing")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_WINDOW_KEPT = 4096  # outcomes kept at most: the rate over a busy window is exact enough on the latest ones


@dataclass(frozen=True, slots=True)
class BreakerRules:
    """When a breaker opens, and for how long: `consecutive` failures in a row, or a share `rate` of failures among
    at least `minimum` outcomes of the last `window` seconds; open `open_for` seconds, doubled each time a probe
    fails, up to `open_max`."""

    consecutive: int = 5
    rate: float = 0.5
    minimum: int = 10
    window: float = 30.0
    open_for: float = 5.0
    open_max: float = 120.0


class Breaker:
    __slots__ = (
        "blocked_until",
        "consecutive",
        "failed",
        "name",
        "outcomes",
        "reason",
        "rules",
        "state",
        "transitions",
        "trips",
    )

    def __init__(self, name: str, rules: BreakerRules) -> None:
        self.name = name  # `provider/model`, for the log
        self.rules = rules
        self.state = CLOSED
        self.blocked_until = 0.0
        self.consecutive = 0
        self.trips = 0  # open spells in a row without a successful probe
        self.outcomes: deque[tuple[float, bool]] = deque()  # (time, failed) within the window
        self.failed = 0  # failures among `outcomes`
        self.reason = ""  # why it last opened
        self.transitions: Counter[str] = Counter()  # new state -> times entered

    def acquire(self, now: float) -> None:
        """A request is about to be sent: an open breaker whose time is up lets this one through as its probe."""
        if self.state == OPEN:
            self._enter(HALF_OPEN, now)
            self.blocked_until = math.inf
            log.info("circuit breaker half-open: one probe goes through", deployment=self.name)

    def success(self, now: float) -> None:
        self._count(now, False)
        self.consecutive = 0
        if self.state == HALF_OPEN:
            self._enter(CLOSED, now)
            self.blocked_until = 0.0
            self.trips = 0
            log.info("circuit breaker closed: the probe succeeded", deployment=self.name)

    def failure(self, now: float, reason: str) -> None:
        self._count(now, True)
        self.consecutive += 1
        rules = self.rules
        if self.state == HALF_OPEN:
            self._open(now, f"the probe failed: {reason}")
        elif self.state == CLOSED:
            if self.consecutive >= rules.consecutive:
                self._open(now, f"{self.consecutive} failures in a row, the last: {reason}")
            elif len(self.outcomes) >= rules.minimum and self.failed >= rules.rate * len(self.outcomes):
                self._open(now, f"{self.failed} of {len(self.outcomes)} calls failed in {rules.window:g}s")

    def release(self, now: float) -> None:
        """The request that held the probe ended without a verdict (the client left): another may probe."""
        if self.state == HALF_OPEN and self.blocked_until == math.inf:
            self.blocked_until = now

    def retry_after(self, now: float) -> float | None:
        """Seconds until traffic may pass again, when open."""
        if self.state == CLOSED or self.blocked_until <= now:
            return None
        return self.blocked_until - now if self.blocked_until != math.inf else None

    def _open(self, now: float, reason: str) -> None:
        rules = self.rules
        self.trips += 1
        seconds = min(rules.open_for * 2 ** (self.trips - 1), rules.open_max)
        self._enter(OPEN, now)
        self.blocked_until = now + seconds
        self.reason = reason
        self.consecutive = 0
        self.outcomes.clear()
        self.failed = 0
        log.warning("circuit breaker opened", deployment=self.name, reason=reason, seconds=seconds)

    def _enter(self, state: str, now: float) -> None:
        self.state = state
        self.transitions[state] += 1

    def _count(self, now: float, failed: bool) -> None:
        outcomes = self.outcomes
        outcomes.append((now, failed))
        self.failed += failed
        horizon = now - self.rules.window
        while outcomes and (outcomes[0][0] < horizon or len(outcomes) > _WINDOW_KEPT):
            self.failed -= outcomes.popleft()[1]
