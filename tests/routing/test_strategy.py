"""The strategies as functions: each tag and combination picks what it must, order of tags changes nothing,
exploration and weights stay within binomial bounds for a fixed seed, breakers and skips pass deployments over."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from gateway.routing.deployments import Fleet, Member, Serving
from gateway.routing.measure import HORIZON, TAU
from gateway.routing.resolve import strategy_tags
from gateway.routing.strategy import DEFAULT_OUTPUT, REFRESH, STRATEGIES, Demand, pick, pick_exactly
from tests.fakes.tables import group_table

NOW = 1000.0
URLS = {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9", "c": "http://127.0.0.1:9"}


def members(*deployments: dict[str, Any], **group: Any) -> tuple[Member, ...]:
    table = group_table(URLS, {"g": {"deployments": list(deployments), **group}})
    return Fleet().bind(table)["g"].members


def measured(member: Member, ttft: float | None = None, rate: float | None = None, at: float = NOW) -> Member:
    member.live.measure.observe(at, ttft, rate, None)
    return member


MIX = Demand(100, 100)


def choose(group: tuple[Member, ...], strategy: str, demand: Demand = MIX, explore: float = 0.0) -> str:
    """The first pick, through a fresh ranking; the exact pass (every member scored now) agrees."""
    found = pick(Serving(group), STRATEGIES[strategy], NOW, random.Random(1), explore, demand, ())
    assert found is not None
    exact = pick_exactly(group, STRATEGIES[strategy], NOW, random.Random(1), explore, demand, ())
    assert exact is found
    return found.provider.id


PRICED = (
    {"provider": "a", "model": "m", "input_price": 1.0, "output_price": 10.0},  # cheap to read, dear to write
    {"provider": "b", "model": "m", "input_price": 5.0, "output_price": 2.0},  # the other way round
)


@pytest.mark.parametrize(
    ("demand", "cheapest"),
    [
        (Demand(10_000, 10), "a"),  # input-heavy: 10,000 + 100 vs 50,000 + 20
        (Demand(10, 10_000), "b"),  # output-heavy: 10 + 100,000 vs 50 + 20,000
    ],
)
def test_price_is_the_request_s_expected_cost(demand: Demand, cheapest: str) -> None:
    assert choose(members(*PRICED), "price", demand) == cheapest


def test_price_without_max_tokens_reads_the_deployment_s_recent_output() -> None:
    a, b = members(*PRICED)
    # No max_tokens: the default output (256) makes b cheaper for a short input...
    assert choose((a, b), "price", Demand(10, None)) == "b"
    assert 10 * 1.0 + DEFAULT_OUTPUT * 10.0 > 10 * 5.0 + DEFAULT_OUTPUT * 2.0
    # ...until a is seen to write one token per answer: 10 + 10 vs 50 + 512.
    a.live.measure.observe(NOW, None, None, 1)
    assert choose((a, b), "price", Demand(10, None)) == "a"


def test_a_deployment_without_prices_costs_the_group_s_highest() -> None:
    group = members(
        {"provider": "a", "model": "m"}, {"provider": "b", "model": "m", "input_price": 3.0, "output_price": 3.0}
    )
    assert (group[0].input_price, group[0].output_price) == (3.0, 3.0)
    # A tie goes to the table's order; a priced deployment is never dearer than an unpriced one.
    assert choose(group, "price") == "a"


def test_latency_and_tokenrate() -> None:
    a, b, c = members(*({"provider": p, "model": "m"} for p in "abc"))
    measured(a, ttft=0.5, rate=100.0)
    measured(b, ttft=0.2, rate=20.0)
    measured(c, ttft=0.9, rate=60.0)
    assert choose((a, b, c), "latency") == "b"
    assert choose((a, b, c), "tokenrate") == "a"
    # Combined: 0.5/100 = 0.005, 0.2/20 = 0.01, 0.9/60 = 0.015.
    assert choose((a, b, c), "latency+tokenrate") == "a"


@pytest.mark.parametrize("written", ["price@latency", "latency@price", "latency@price@latency"])
def test_the_order_of_tags_changes_nothing(written: str) -> None:
    assert strategy_tags(written) == "price+latency"


def test_combined_scores_multiply_ratios() -> None:
    a, b = members(
        {"provider": "a", "model": "m", "input_price": 2.0, "output_price": 2.0},
        {"provider": "b", "model": "m", "input_price": 1.0, "output_price": 1.0},
    )
    measured(a, ttft=0.1)
    measured(b, ttft=0.3)
    # b is half the price, a a third of the time to first token: a wins price+latency (2 x 0.1 < 1 x 0.3)...
    assert choose((a, b), "price") == "b"
    assert choose((a, b), "price+latency") == "a"
    # ...and b wins once it is more than twice as fast as a: 1 x 0.19 < 2 x 0.1.
    b.live.measure.ttft = 0.19
    assert choose((a, b), "price+latency") == "b"


def test_a_free_deployment_wins_price_and_free_ones_are_told_apart_by_the_other_tags() -> None:
    a, b, c = members(
        {"provider": "a", "model": "m", "input_price": 0, "output_price": 0},
        {"provider": "b", "model": "m", "input_price": 0, "output_price": 0},
        {"provider": "c", "model": "m", "input_price": 1, "output_price": 1},
    )
    for member, ttft in ((a, 0.9), (b, 0.5), (c, 0.01)):
        measured(member, ttft=ttft)
    assert choose((a, b, c), "price+latency") == "b"


def test_fallback_goes_in_the_table_s_order_past_open_breakers_and_skips() -> None:
    a, b, c = members(*({"provider": p, "model": "m"} for p in "abc"))
    strategy, serving = STRATEGIES["fallback"], Serving((a, b, c))
    assert pick(serving, strategy, NOW, random.Random(), 0.0, Demand(1, 1), ()) is a
    assert pick(serving, strategy, NOW, random.Random(), 0.0, Demand(1, 1), {0}) is b
    b.live.breaker.blocked_until = NOW + 1
    assert pick(serving, strategy, NOW, random.Random(), 0.0, Demand(1, 1), {0}) is c
    assert pick(serving, strategy, NOW, random.Random(), 0.0, Demand(1, 1), {0, 2}) is None
    a.live.breaker.blocked_until = NOW + 1
    assert pick(serving, strategy, NOW, random.Random(), 0.0, Demand(1, 1), ()) is c


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_weights_within_binomial_bounds() -> None:
    group = members(
        {"provider": "a", "model": "m", "weight": 3},
        {"provider": "b", "model": "m", "weight": 1},
        {"provider": "c", "model": "m", "weight": 0},
    )
    rng = random.Random(20261126)
    serving = Serving(group)
    n = 20_000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        found = pick(serving, STRATEGIES["weighted"], NOW, rng, 0.0, Demand(1, 1), ())
        assert found is not None
        counts[found.provider.id] += 1
    low, high = binomial_bound(n, 0.75)
    assert low <= counts["a"] <= high
    assert counts["c"] == 0  # weight 0: only once the others are out
    assert pick(serving, STRATEGIES["weighted"], NOW, rng, 0.0, Demand(1, 1), {0, 1}) is group[2]


def test_weights_stay_proportional_among_open_deployments() -> None:
    group = members(*({"provider": p, "model": "m", "weight": w} for p, w in zip("abc", (2, 1, 1), strict=True)))
    group[1].live.breaker.blocked_until = NOW + 1  # b is open: a gets 2/3, c 1/3
    rng, serving, n = random.Random(5), Serving(group), 20_000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        found = pick(serving, STRATEGIES["weighted"], NOW, rng, 0.0, Demand(1, 1), ())
        assert found is not None
        counts[found.provider.id] += 1
    low, high = binomial_bound(n, 2 / 3)
    assert counts["b"] == 0
    assert low <= counts["a"] <= high


def test_unmeasured_deployments_get_the_exploration_share() -> None:
    a, b, c = members(*({"provider": p, "model": "m"} for p in "abc"))
    measured(a, ttft=0.1)
    rng, serving = random.Random(7), Serving((a, b, c))
    n = 20_000
    seen = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        found = pick(serving, STRATEGIES["latency"], NOW, rng, 0.05, Demand(1, 1), ())
        assert found is not None
        seen[found.provider.id] += 1
    low, high = binomial_bound(n, 0.05)
    assert low <= seen["b"] + seen["c"] <= high
    # Split evenly among the unmeasured ones.
    low, high = binomial_bound(seen["b"] + seen["c"], 0.5)
    assert low <= seen["b"] <= high


def test_with_nothing_measured_the_table_s_order_or_the_price() -> None:
    group = members(
        {"provider": "a", "model": "m", "input_price": 9, "output_price": 9},
        {"provider": "b", "model": "m", "input_price": 1, "output_price": 1},
    )
    assert choose(group, "latency", explore=0.5) == "a"
    assert choose(group, "price+latency", explore=0.5) == "b"


def test_a_slow_deployment_that_becomes_fast_is_found_again() -> None:
    fast, slow = members({"provider": "a", "model": "m"}, {"provider": "b", "model": "m"})
    measured(fast, ttft=0.3)
    measured(slow, ttft=2.0)
    rng, serving = random.Random(3), Serving((fast, slow))
    strategy = STRATEGIES["latency"]
    assert pick(serving, strategy, NOW, rng, 0.05, Demand(1, 1), ()) is fast
    # Nobody sends b traffic, so its figure is not renewed: past HORIZON it is unmeasured and explored again.
    later = NOW + HORIZON + 1
    fast.live.measure.observe(later, 0.3, None, None)  # a keeps being measured
    explored = 0
    for _ in range(200):
        found = pick(serving, strategy, later, rng, 0.05, Demand(1, 1), ())
        if found is slow:
            explored += 1
            # b has recovered: its new sample replaces the old average (a gap of over a minute).
            slow.live.measure.observe(later, 0.05, None, None)
            break
    assert explored == 1
    # 2.0 -> 0.23: a gap of 61 s (about two TAU) leaves 9 % of the old average, and b is ahead again.
    assert slow.live.measure.ttft == pytest.approx(
        2.0 + (1 - 0.7 * math.exp(-(HORIZON + 1) / TAU)) * (0.05 - 2.0), rel=1e-3
    )
    assert slow.live.measure.ttft < fast.live.measure.ttft
    # The ranking made at `later` stands for REFRESH seconds; the next one puts b first.
    assert pick(serving, strategy, later, rng, 0.0, Demand(1, 1), ()) is fast
    assert pick(serving, strategy, later + REFRESH, rng, 0.0, Demand(1, 1), ()) is slow


def test_a_ranking_is_reused_for_refresh_seconds_and_a_blocked_choice_is_scored_afresh() -> None:
    a, b, c = members(*({"provider": p, "model": "m"} for p in "abc"))
    for member, ttft in ((a, 0.1), (b, 0.2), (c, 0.3)):
        measured(member, ttft=ttft)
    serving, latency = Serving((a, b, c)), STRATEGIES["latency"]
    assert pick(serving, latency, NOW, random.Random(), 0.0, Demand(1, 1), ()) is a
    c.live.measure.ttft = 0.01  # c is now the fastest
    assert pick(serving, latency, NOW + 0.5, random.Random(), 0.0, Demand(1, 1), ()) is a  # the ranking of NOW
    a.live.breaker.blocked_until = NOW + 10
    assert pick(serving, latency, NOW + 0.5, random.Random(), 0.0, Demand(1, 1), ()) is b  # its next, still
    assert pick(serving, latency, NOW + REFRESH, random.Random(), 0.0, Demand(1, 1), ()) is c


def test_price_with_a_blocked_cheapest_goes_to_the_next_cheapest() -> None:
    group = members(
        *(
            {"provider": p, "model": "m", "input_price": price, "output_price": price}
            for p, price in zip("abc", (1.0, 2.0, 3.0), strict=True)
        )
    )
    group[0].live.breaker.blocked_until = NOW + 1
    found = pick(Serving(group), STRATEGIES["price"], NOW, random.Random(), 0.0, MIX, ())
    assert found is group[1]


def test_measurements_are_kept_across_a_reload_for_surviving_deployments() -> None:
    fleet = Fleet()
    first = fleet.bind(group_table(URLS, {"g": {"deployments": [{"provider": "a", "model": "m"}]}}))
    first["g"].members[0].live.measure.observe(NOW, 0.4, None, None)
    first["g"].members[0].live.breaker.blocked_until = NOW + 5
    second = fleet.bind(
        group_table(
            URLS,
            {
                "g": {"deployments": [{"provider": "b", "model": "m"}, {"provider": "a", "model": "m"}]},
                "h": {"deployments": [{"provider": "a", "model": "m"}]},
            },
        )
    )
    kept = second["g"].members[1].live
    assert kept is first["g"].members[0].live
    assert second["h"].members[0].live is kept  # one deployment, one state, whatever group names it
    assert kept.measure.ttft == 0.4
    assert second["g"].members[0].live.measure.samples == 0
    third = fleet.bind(group_table(URLS, {"g": {"deployments": [{"provider": "b", "model": "m"}]}}))
    assert set(fleet.live) == {("b", "m")}
    assert third["g"].members[0].live is second["g"].members[0].live
