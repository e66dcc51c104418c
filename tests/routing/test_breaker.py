"""The circuit breaker as a function of outcomes and time: open after consecutive failures or a failure rate over
its window, one probe when half-open, closed on its success, open for longer on its failure."""

from __future__ import annotations

import math

import pytest

from gateway.routing.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerRules

T = 1000.0


def breaker(**rules: float) -> Breaker:
    return Breaker("p/m", BreakerRules(**rules))  # type: ignore[arg-type]


def test_consecutive_failures_open_it() -> None:
    b = breaker()
    for _ in range(4):
        b.failure(T, "answered 503")
    assert (b.state, b.blocked_until) == (CLOSED, 0.0)
    b.success(T)  # a success resets the run
    for _ in range(4):
        b.failure(T, "answered 503")
    assert b.state == CLOSED
    b.failure(T, "answered 503")
    assert (b.state, b.blocked_until) == (OPEN, T + 5.0)
    assert b.reason == "5 failures in a row, the last: answered 503"
    assert b.retry_after(T + 1) == 4.0


def test_a_failure_rate_over_the_window_opens_it() -> None:
    b = breaker(consecutive=100)
    for n in range(9):
        if n % 2:
            b.failure(T + n, "x")
        else:
            b.success(T + n)
    assert b.state == CLOSED  # 4 of 9: under the minimum of outcomes
    b.failure(T + 9, "x")
    # 5 of 10: the rate (50 %) over the minimum of outcomes.
    assert b.state == OPEN
    assert b.reason == "5 of 10 calls failed in 30s"


def test_outcomes_older_than_the_window_do_not_count() -> None:
    b = breaker(consecutive=100)
    for n in range(6):
        b.failure(T + n, "x")
    for n in range(4):
        b.success(T + 40 + n)  # the failures are over 30 s old now
    assert (b.state, b.failed, len(b.outcomes)) == (CLOSED, 0, 4)


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    b = breaker(consecutive=1)
    b.failure(T, "x")
    assert b.blocked_until == T + 5
    # Time is up: whoever comes first takes the probe; everyone else sees it blocked until the verdict.
    b.acquire(T + 5)
    assert (b.state, b.blocked_until) == (HALF_OPEN, math.inf)
    b.success(T + 6)
    assert (b.state, b.blocked_until, b.trips) == (CLOSED, 0.0, 0)
    assert b.transitions == {OPEN: 1, HALF_OPEN: 1, CLOSED: 1}


def test_a_failed_probe_opens_it_for_twice_as_long_up_to_the_cap() -> None:
    b = breaker(consecutive=1, open_for=5, open_max=12)
    b.failure(T, "x")
    b.acquire(T + 5)
    b.failure(T + 5, "answered 500")
    assert (b.state, b.blocked_until, b.reason) == (OPEN, T + 15, "the probe failed: answered 500")
    b.acquire(T + 15)
    b.failure(T + 15, "y")
    assert b.blocked_until == T + 27  # 20 s capped at 12


def test_a_probe_without_a_verdict_lets_another_probe() -> None:
    b = breaker(consecutive=1)
    b.failure(T, "x")
    b.acquire(T + 5)
    b.release(T + 6)
    assert (b.state, b.blocked_until) == (HALF_OPEN, T + 6)
    assert b.retry_after(T + 6) is None


@pytest.mark.parametrize("state", [CLOSED, OPEN])
def test_acquire_does_nothing_to_a_breaker_that_is_not_due(state: str) -> None:
    b = breaker(consecutive=1)
    if state == OPEN:
        b.failure(T, "x")
    before = (b.state, b.blocked_until)
    if state == CLOSED:
        b.acquire(T)
    assert (b.state, b.blocked_until) == before
