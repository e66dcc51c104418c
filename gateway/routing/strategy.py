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

import itertools
import random
from collections.abc import Collection, Sequence
from typing import NamedTuple

from gateway.config.providers import GROUP_ORDERS, STRATEGY_TAGS
from gateway.routing.deployments import Member
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


def pick(
    members: Sequence[Member],
    strategy: Strategy,
    now: float,
    rng: random.Random,
    explore: float,
    demand: Demand,
    skip: Collection[int],
) -> Member | None:
    """The deployment to try next, or None when every one is passed over."""
    if strategy.scored:
        return _scored(members, strategy, now, rng, explore, demand, skip)
    if strategy.name == "weighted":
        return _weighted(members, now, rng, skip)
    for member in members:
        if member.place not in skip and member.live.breaker.blocked_until <= now:
            return member
    return None


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
