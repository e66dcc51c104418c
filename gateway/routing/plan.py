"""One request's way through a model group: which deployment to try next, within the group's attempt limit and
time budget, what became of each, and the answer when none could serve (503 naming the group and why each
deployment was passed over, with Retry-After from the soonest breaker).
"""

from __future__ import annotations

import math
import random

from gateway.config.providers import ModelGroup
from gateway.errors import GatewayError, GroupUnavailable
from gateway.routing.deployments import Member, Serving
from gateway.routing.strategy import Demand, Strategy, pick

# Retry-After when no breaker says when: the failures were answers, and a second is the SDKs' own first backoff.
_RETRY_AFTER_DEFAULT = 1


class Plan:
    __slots__ = ("deadline", "demand", "group", "notes", "refusal", "rng", "serving", "skip", "strategy", "tried")

    def __init__(
        self, group: ModelGroup, serving: Serving, strategy: Strategy, rng: random.Random, now: float, demand: Demand
    ) -> None:
        self.group = group
        self.serving = serving
        self.strategy = strategy
        self.rng = rng
        self.demand = demand
        self.deadline = now + group.budget
        self.skip: set[int] = set()
        self.notes: list[str] = []  # `provider/model: why`, in the order things happened
        self.refusal: GatewayError | None = None  # the first policy refusal
        self.tried = 0

    def next(self, now: float) -> Member | None:
        """The deployment to try now, or None when the attempts, the time or the deployments have run out."""
        if self.tried >= self.group.attempts or now >= self.deadline:
            return None
        member = pick(self.serving, self.strategy, now, self.rng, self.group.explore, self.demand, self.skip)
        if member is not None:
            self.skip.add(member.place)
        return member

    def remaining(self, now: float) -> float:
        return self.deadline - now

    def refused(self, member: Member, why: GatewayError) -> None:
        """The client's policy, the model filter or a capability rules it out: passed over, never tried."""
        member.live.skipped += 1
        self.notes.append(f"{member.name}: {why.message}")
        if self.refusal is None:
            self.refusal = why

    def trying(self, member: Member) -> None:
        self.tried += 1

    def failed(self, member: Member, why: str) -> None:
        member.live.failed += 1
        self.notes.append(f"{member.name}: {why}")

    @property
    def fallbacks(self) -> int:
        return max(self.tried - 1, 0)

    def exhausted(self, now: float) -> GatewayError:
        """The answer when nothing served: a policy's own refusal when that is all there was, else the 503."""
        if (
            self.tried == 0
            and self.refusal is not None
            and not self.serving.unconfigured
            and all(member.place in self.skip for member in self.serving.members)
        ):
            return self.refusal
        notes = [*self.serving.unconfigured, *self.notes]
        soonest = math.inf
        for member in self.serving.members:
            if member.place in self.skip:
                continue
            breaker = member.live.breaker
            wait = breaker.retry_after(now)
            if wait is not None:
                soonest = min(soonest, wait)
                notes.append(f"{member.name}: circuit open for {math.ceil(wait)}s more ({breaker.reason})")
            elif breaker.blocked_until > now:
                notes.append(f"{member.name}: circuit half-open, its probe is in flight")
            elif self.tried >= self.group.attempts:
                notes.append(f"{member.name}: not tried, {self.group.attempts} attempts made")
            else:
                notes.append(f"{member.name}: not tried, the {self.group.budget:g}s budget was spent")
        if not self.serving.members and not notes:
            notes.append("no deployment serves this endpoint")
        retry_after = _RETRY_AFTER_DEFAULT if soonest == math.inf else max(math.ceil(soonest), 1)
        return GroupUnavailable(
            f"no deployment of model {self.group.name!r} could serve the request: " + "; ".join(notes),
            headers={"Retry-After": str(retry_after)},
        )
