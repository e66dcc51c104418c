"""The deployments of the table's model groups as routing sees them: per table, each group's members with their
prices filled in and their endpoints per operation; across tables, each deployment's live state (measurements,
circuit breaker, counts), kept for the deployments a reload keeps.

A deployment is a (provider id, model) pair: two groups naming the same pair share its measurements and breaker,
since they are the same upstream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from gateway.config.capabilities import wrong_type
from gateway.config.providers import ModelGroup, Provider, ProviderTable
from gateway.routing.breaker import Breaker, BreakerRules
from gateway.routing.measure import Measure

Clock = Callable[[], float]


class Live:
    """What one deployment has shown so far; mutable, outlives table reloads."""

    __slots__ = ("breaker", "failed", "measure", "served", "skipped")

    def __init__(self, name: str, rules: BreakerRules) -> None:
        self.measure = Measure()
        self.breaker = Breaker(name, rules)
        self.served = 0  # requests whose answer it began
        self.failed = 0  # attempts that failed before the first byte (then another deployment was tried)
        self.skipped = 0  # times a request passed it over without trying (policy, breaker, capability)


class Member(NamedTuple):
    """A deployment in one table's group; built at load, read per request."""

    place: int  # its index in the group's `deployments`
    provider: Provider
    model: str
    weight: float
    input_price: float  # per million tokens; a missing price is the group's highest (never cheaper by omission)
    output_price: float
    live: Live

    @property
    def name(self) -> str:
        return f"{self.provider.id}/{self.model}"


class Serving:
    """A group's members that serve one operation, why the others cannot (not configured), and the strategies'
    rankings of them (`strategy.py`: reused for a moment, so a pick does not score every member)."""

    __slots__ = ("members", "mismatched", "rankings", "unconfigured")

    def __init__(
        self, members: tuple[Member, ...], unconfigured: tuple[str, ...] = (), mismatched: tuple[str, ...] = ()
    ) -> None:
        self.members = members
        self.unconfigured = unconfigured
        self.mismatched = mismatched  # members left out: their model is of another service type
        self.rankings: dict[str, object] = {}  # strategy name -> its ranking


class GroupView:
    """One group of one table: its members, and per operation those that serve it (computed on first use)."""

    __slots__ = ("_serving", "group", "members")

    def __init__(self, group: ModelGroup, members: tuple[Member, ...]) -> None:
        self.group = group
        self.members = members
        self._serving: dict[str, Serving] = {}

    def serving(self, operation: str) -> Serving:
        found = self._serving.get(operation)
        if found is None:
            found = self._serving[operation] = _serving(self.members, operation)
        return found


Views = Mapping[str, GroupView]  # lower-case group name -> view


class Fleet:
    """Every deployment's live state, the clock it is measured by and the random source of weighted and exploring
    picks. Owned by the app's runtime state; `bind` makes a table's views, keeping the state of surviving
    deployments and forgetting the others."""

    def __init__(
        self, clock: Clock = time.perf_counter, rng: random.Random | None = None, rules: BreakerRules | None = None
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.rules = rules or BreakerRules()
        self.live: dict[tuple[str, str], Live] = {}

    def bind(self, table: ProviderTable) -> Views:
        live: dict[tuple[str, str], Live] = {}
        views: dict[str, GroupView] = {}
        for key, group in table.groups.items():
            views[key] = GroupView(group, self._members(table, group, live))
        self.live = live
        return views

    def _members(
        self, table: ProviderTable, group: ModelGroup, live: dict[tuple[str, str], Live]
    ) -> tuple[Member, ...]:
        deployments = group.deployments
        top_in = max((d.input_price for d in deployments if d.input_price is not None), default=0.0)
        top_out = max((d.output_price for d in deployments if d.output_price is not None), default=0.0)
        members = []
        for index, d in enumerate(deployments):
            key = (d.provider, d.model)
            state = live.get(key) or self.live.get(key) or Live(f"{d.provider}/{d.model}", self.rules)
            live[key] = state
            members.append(
                Member(
                    index,
                    table.providers[d.provider],
                    d.model,
                    d.weight,
                    top_in if d.input_price is None else d.input_price,
                    top_out if d.output_price is None else d.output_price,
                    state,
                )
            )
        return tuple(members)


def _serving(members: tuple[Member, ...], operation: str) -> Serving:
    serves: list[Member] = []
    unconfigured: list[str] = []
    mismatched: list[str] = []
    for member in members:
        provider = member.provider
        if operation not in provider.endpoints:
            continue
        wrong = wrong_type(provider.id, provider.catalog, member.model, operation)
        if wrong is not None:
            mismatched.append(wrong)
            continue
        if provider.unavailable is not None:
            unconfigured.append(f"{member.name}: provider not configured ({provider.unavailable})")
            continue
        serves.append(member)
    return Serving(tuple(serves), tuple(unconfigured), tuple(mismatched))
