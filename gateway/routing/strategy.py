"""Which deployment of a group a request tries next: the strategies and how their scores combine.

- `fallback`: the table's order.
- `weighted`: at random, in proportion to `weight` (weight 0: only once the others are out).
- tags (`price`, `latency`, `tokenrate`, any combination): the lowest score, where the score is the product of the
  tags' figures: expected cost, time to first token, and seconds per output token (1 / tokens per second). Each
  figure is a ratio scale, so a product compares deployments by relative differences (twice the price is made up
  for by twice the speed), whatever the units, and the order the tags are written in changes nothing. A sum would
  let whichever figure has the larger numbers decide.

Deployments without a recent measurement for a measured tag are not scored: a share `explore` of requests goes to
one of them (at random) so that they get measured, and the rest to the best scored one. When none is measured,
the unmeasured ones go in the table's order (or by price, if price is a tag).

Passed over: deployments whose circuit breaker is open (`blocked_until` ahead of now) and those in `skip` (tried
or refused already by this request). One pass over the group per pick, reading slots; nothing is allocated for a
group's healthy members.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Collection, Sequence
from typing import NamedTuple

from gateway.config.providers import GROUP_ORDERS, STRATEGY_TAGS
from gateway.routing.deployments import Member, Serving
from gateway.routing.measure import HORIZON as _HORIZON

# Output tokens assumed for @price when the request sets no max_tokens and the deployment has no recent average.
DEFAULT_OUTPUT = 256
# The smallest factor of a score: a free deployment (price 0) wins @price outright, and among free ones the other
# tags still decide.
_FLOOR = 1e-12


class Strategy(NamedTuple):
    name: str  # canonical: fallback, weighted, or tags joined with '+' in STRATEGY_TAGS' order
    price: bool = False
    latency: bool = False
    tokenrate: bool = False

    @property
    def scored(self) -> bool:
        return self.price or self.latency or self.tokenrate


def _every_strategy() -> dict[str, Strategy]:
    found = {name: Strategy(name) for name in GROUP_ORDERS}
    for size in range(1, len(STRATEGY_TAGS) + 1):
        for tags in itertools.combinations(STRATEGY_TAGS, size):
            name = "+".join(tags)
            found[name] = Strategy(name, "price" in tags, "latency" in tags, "tokenrate" in tags)
    return found


# Canonical name -> strategy; built once, looked up per request.
STRATEGIES = _every_strategy()


class Demand(NamedTuple):
    """What @price reads of a request: its input tokens (estimated from the body) and max_tokens, if set."""

    input_tokens: int
    max_output: int | None


# Seconds a strategy's ranking of a group is reused before it is recomputed from the live figures: a pick then
# reads a few members instead of scoring all of them, and the figures it acts on are at most this old.
REFRESH = 1.0


class Ranking:
    """One scored strategy's view of a group's members at `at`. `order`: the scored members, best first (with
    price, used only for the slow path's fallback order); `cold`: those left to exploration; with price, the
    members that can be cheapest for some token mix (the Pareto front of input and output cost, each multiplied by
    the other tags' factor), for a known output (`front`: per-token prices) and for the recent average one
    (`spread`: the output's cost already in)."""

    __slots__ = ("at", "cold", "front", "order", "spread")

    def __init__(
        self,
        at: float,
        order: tuple[Member, ...],
        cold: tuple[Member, ...],
        front: tuple[tuple[float, float, Member], ...] = (),
        spread: tuple[tuple[float, float, Member], ...] = (),
    ) -> None:
        self.at = at
        self.order = order
        self.cold = cold
        self.front = front
        self.spread = spread


class Weights:
    """Running totals of a group's weights, for a pick by bisection; weights do not change while a table lives."""

    __slots__ = ("members", "running", "total")

    def __init__(self, members: Sequence[Member]) -> None:
        weighted = [m for m in members if m.weight > 0.0]
        self.members = tuple(weighted)
        self.running = tuple(itertools.accumulate(m.weight for m in weighted))
        self.total = self.running[-1] if weighted else 0.0


def pick(
    serving: Serving,
    strategy: Strategy,
    now: float,
    rng: random.Random,
    explore: float,
    demand: Demand,
    skip: Collection[int],
) -> Member | None:
    """The deployment to try next, or None when every one is passed over.

    The first pick of a request (nothing skipped yet) reads the strategy's ranking, recomputed at most every
    REFRESH seconds; when what it names is blocked, and for every later pick, the members are scored one by one on
    their current figures, which gives the same choice on fresh figures."""
    members = serving.members
    if skip:
        return pick_exactly(members, strategy, now, rng, explore, demand, skip)
    if strategy.scored:
        return _ranked(serving, strategy, now, rng, explore, demand)
    if strategy.name == "weighted":
        weights = serving.rankings.get("weighted")
        if not isinstance(weights, Weights):
            weights = serving.rankings["weighted"] = Weights(members)
        if weights.total > 0.0:
            found = weights.members[
                min(bisect.bisect(weights.running, rng.random() * weights.total), len(weights.members) - 1)
            ]
            if found.live.breaker.blocked_until <= now:
                return found
        # Blocked: drawn again among the open ones, which keeps the shares exactly proportional to the weights.
        return _weighted(members, now, rng, skip)
    for member in members:
        if member.live.breaker.blocked_until <= now:
            return member
    return None


def pick_exactly(
    members: Sequence[Member],
    strategy: Strategy,
    now: float,
    rng: random.Random,
    explore: float,
    demand: Demand,
    skip: Collection[int],
) -> Member | None:
    """As `pick`, scoring every member on its current figures (one pass)."""
    if strategy.scored:
        return _scored(members, strategy, now, rng, explore, demand, skip)
    if strategy.name == "weighted":
        return _weighted(members, now, rng, skip)
    for member in members:
        if member.place not in skip and member.live.breaker.blocked_until <= now:
            return member
    return None


def _ranked(
    serving: Serving, strategy: Strategy, now: float, rng: random.Random, explore: float, demand: Demand
) -> Member | None:
    ranking = serving.rankings.get(strategy.name)
    if not isinstance(ranking, Ranking) or now - ranking.at >= REFRESH:
        ranking = serving.rankings[strategy.name] = _rank(serving.members, strategy, now)
    cold = ranking.cold
    if cold and rng.random() < explore:
        found = cold[int(rng.random() * len(cold))]
        if found.live.breaker.blocked_until <= now:
            return found
        return _scored(serving.members, strategy, now, rng, explore, demand, ())
    if strategy.price:
        tokens_in, max_out = demand
        if max_out is None:
            points, per_output = ranking.spread, 1.0
        else:
            points, per_output = ranking.front, float(max_out)
        best: Member | None = None
        lowest = math.inf
        for per_input, output_cost, member in points:
            cost = tokens_in * per_input + per_output * output_cost
            if cost < lowest:
                best, lowest = member, cost
        if best is not None and best.live.breaker.blocked_until <= now:
            return best
    else:
        for member in ranking.order:
            if member.live.breaker.blocked_until <= now:
                return member
    return _scored(serving.members, strategy, now, rng, 0.0, demand, ())


def _rank(members: Sequence[Member], strategy: Strategy, now: float) -> Ranking:
    scored: list[tuple[float, Member]] = []
    cold: list[Member] = []
    for member in members:
        measure = member.live.measure
        factor = 1.0
        if strategy.latency:
            if now - measure.ttft_at > _HORIZON:
                cold.append(member)
                continue
            factor *= max(measure.ttft, _FLOOR)
        if strategy.tokenrate:
            if now - measure.rate_at > _HORIZON:
                cold.append(member)
                continue
            factor /= measure.rate
        scored.append((factor, member))
    if not scored:
        # Nothing measured yet: the table's order, or by price alone; nothing to explore apart from them.
        scored, cold = [(1.0, member) for member in cold], []
    scored.sort(key=lambda pair: (pair[0], pair[1].place))
    order = tuple(member for _, member in scored)
    if not strategy.price:
        return Ranking(now, order, tuple(cold))
    front = _pareto([(f * m.input_price, f * m.output_price, f, m) for f, m in scored])
    spread = _pareto([(f * m.input_price, f * _expected(m, now) * m.output_price, f, m) for f, m in scored])
    return Ranking(now, order, tuple(cold), front, spread)


def _pareto(points: list[tuple[float, float, float, Member]]) -> tuple[tuple[float, float, Member], ...]:
    """The points no other beats on both costs: the lowest cost for any token mix is among them. Exact ties keep
    the better factor (a free deployment that is faster)."""
    points.sort(key=lambda p: (p[0], p[1], p[2], p[3].place))
    kept: list[tuple[float, float, Member]] = []
    lowest = math.inf
    for x, y, _, member in points:
        if y < lowest:
            kept.append((x, y, member))
            lowest = y
    return tuple(kept)


def _expected(member: Member, now: float) -> float:
    expected = member.live.measure.expected_output(now)
    return DEFAULT_OUTPUT if expected is None else expected


def _weighted(members: Sequence[Member], now: float, rng: random.Random, skip: Collection[int]) -> Member | None:
    total = 0.0
    spare: Member | None = None  # the first open one of weight 0, for when nothing weighted is left
    for member in members:
        if member.place not in skip and member.live.breaker.blocked_until <= now:
            if member.weight > 0.0:
                total += member.weight
            elif spare is None:
                spare = member
    if total <= 0.0:
        return spare
    point = rng.random() * total
    last: Member | None = None
    for member in members:
        if member.place not in skip and member.live.breaker.blocked_until <= now and member.weight > 0.0:
            point -= member.weight
            last = member
            if point < 0.0:
                return member
    return last  # rounding left a sliver at the end


def _scored(
    members: Sequence[Member],
    strategy: Strategy,
    now: float,
    rng: random.Random,
    explore: float,
    demand: Demand,
    skip: Collection[int],
) -> Member | None:
    price, latency, tokenrate = strategy.price, strategy.latency, strategy.tokenrate
    tokens_in, max_out = demand
    best: Member | None = None
    best_score = 0.0
    cold: list[Member] | None = None
    for member in members:
        if member.place in skip or member.live.breaker.blocked_until > now:
            continue
        measure = member.live.measure
        score = 1.0
        if price:
            if max_out is not None:
                out = float(max_out)
            else:
                out = measure.output if now - measure.output_at <= _HORIZON else DEFAULT_OUTPUT
            score = max(tokens_in * member.input_price + out * member.output_price, _FLOOR)
        if latency:
            if now - measure.ttft_at > _HORIZON:
                cold = [member] if cold is None else [*cold, member]
                continue
            score *= max(measure.ttft, _FLOOR)
        if tokenrate:
            if now - measure.rate_at > _HORIZON:
                cold = [member] if cold is None else [*cold, member]
                continue
            score /= measure.rate
        if best is None or score < best_score:
            best, best_score = member, score
    if cold is None:
        return best
    if best is None:
        # Nothing measured yet: the table's order, or the cheapest first when price is a tag.
        return min(cold, key=lambda m: _price(m, demand, now)) if price else cold[0]
    if rng.random() < explore:
        return cold[int(rng.random() * len(cold))]
    return best


def _price(member: Member, demand: Demand, now: float) -> float:
    expected = member.live.measure.expected_output(now) if demand.max_output is None else float(demand.max_output)
    out = DEFAULT_OUTPUT if expected is None else expected
    return demand.input_tokens * member.input_price + out * member.output_price
