"""What routing among a model group's deployments adds to a request, in-process and without I/O: the decision the
handler makes (resolve, the group's deployments for the operation, the strategy's pick, the filter, the route) for
a group of 50 deployments under each strategy, against the same steps for a pinned `provider/model` route; and the
same group in a table of 1 group and of 1,000 groups, to show nothing grows with the number of groups.

    .venv/bin/python -m bench.routing_cost [--deployments 50] [--groups 1000]

Best of 9 runs of 10,000 decisions each, in CPU time, over three rounds taken in turn; prints a Markdown table:
microseconds per decision, and what a group adds over a pinned route.
"""

from __future__ import annotations

import argparse
import random
import time
import timeit
from collections.abc import Callable
from typing import Any

import yaml

from gateway.config.providers import Deployment, ModelGroup, ProviderTable, index_table, parse_table
from gateway.config.settings import Settings
from gateway.dialects import openai
from gateway.routing import resolve
from gateway.routing.plan import Plan
from gateway.routing.resolve import Grouped, Route
from gateway.routing.strategy import STRATEGIES, Demand
from gateway.runtime.state import GatewayState

NOW = 1000.0
STRATEGY_MODELS = {
    "fallback": "g0",
    "weighted": "g0",
    "price": "g0@price",
    "latency": "g0@latency",
    "price+latency+tokenrate": "g0@price@latency@tokenrate",
}


def table(deployments: int, groups: int) -> ProviderTable:
    """`deployments` providers and `groups` groups, each of every provider with varied weights and prices; the
    groups are built as the loader builds them (no YAML for a thousand groups)."""
    providers = {
        f"p{i}": {
            "id": f"p{i}",
            "url": f"http://127.0.0.1:{9000 + i}/v1",
            "auth_type": "none",
            "endpoints": {"chat": {"name": "chat", "method": "POST", "endpoint": "/chat/completions"}},
        }
        for i in range(deployments)
    }
    loaded = parse_table(yaml.safe_dump({"providers": providers}), {}, source="bench")
    models = {
        f"g{g}": ModelGroup(
            f"g{g}",
            tuple(
                Deployment(f"p{i}", f"m{g}", 1.0 + i % 3, 1.0 + (i * 7) % 11, 2.0 + (i * 5) % 13)
                for i in range(deployments)
            ),
        )
        for g in range(groups)
    }
    return index_table(loaded.providers, "bench", models)


def body(model: str) -> bytes:
    return b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":"hello there"}],"max_tokens":64}'


def _state(tbl: ProviderTable, measured: bool) -> GatewayState:
    state = GatewayState(Settings(), tbl)
    state.fleet.clock = lambda: NOW
    state.fleet.rng = random.Random(1)
    if measured:
        rng = random.Random(2)
        for live in state.fleet.live.values():
            live.measure.observe(NOW, rng.uniform(0.1, 1.0), rng.uniform(20, 200), rng.randint(50, 500))
    return state


def pinned_decision(state: GatewayState, raw: bytes) -> Callable[[], Any]:
    tbl, model_filter = state.table, state.model_filter

    def one() -> Any:
        parsed = openai.parse_chat(raw)
        route = resolve.target(tbl, parsed.model, "chat", query_provider=None, body_provider=parsed.provider)[0]
        model_filter.check(route.provider.id, route.model)  # type: ignore[union-attr]
        return route

    return one


def group_decision(state: GatewayState, raw: bytes, strategy: str) -> Callable[[], Any]:
    """What api/groups.py does before the first byte is sent, for the first deployment it tries."""
    tbl, model_filter, views, fleet = state.table, state.model_filter, state.groups, state.fleet

    def one() -> Any:
        parsed = openai.parse_chat(raw)
        found = resolve.target(tbl, parsed.model, "chat", query_provider=None, body_provider=parsed.provider)
        assert type(found) is Grouped
        group = found.group
        view = views[group.name.lower()]
        serving = view.serving("chat")
        chosen = STRATEGIES[found.tags or strategy]
        body = parsed.body
        max_out = body.get("max_tokens")
        plan = Plan(group, serving, chosen, fleet.rng, fleet.clock(), Demand(len(raw) // 4, max_out))
        member = plan.next(fleet.clock())
        assert member is not None
        model_filter.allows(member.provider.id, member.model)
        return Route(member.provider, member.model, found.requested, member.provider.endpoints["chat"])

    return one


def best_us(fn: Callable[[], Any], number: int = 10_000) -> float:
    """Microseconds of this process's CPU time per call, best of 9 runs: time the process spends descheduled on
    a busy machine does not count."""
    fn()
    return min(timeit.repeat(fn, number=number, repeat=9, timer=time.process_time)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--groups", type=int, default=1000)
    args = parser.parse_args()
    small = table(args.deployments, 1)
    large = table(args.deployments, args.groups)
    size, count = args.deployments, args.groups
    print(f"| strategy | pinned route | 1 group of {size} | {count} groups of {size} | added (1, {count} groups) |")
    print("| --- | --- | --- | --- | --- |")
    for strategy, model in STRATEGY_MODELS.items():
        default = "weighted" if strategy == "weighted" else "fallback"
        pinned_fn = pinned_decision(_state(small, True), body("p7/m0"))
        one_fn = group_decision(_state(small, True), body(model), default)
        many_fn = group_decision(_state(large, True), body(model), default)
        # Three rounds, taken in turn, and the best of each: the three figures share the machine's quiet moments.
        rounds = [(best_us(pinned_fn), best_us(one_fn), best_us(many_fn)) for _ in range(3)]
        pinned, one, many = (min(r[i] for r in rounds) for i in range(3))
        print(
            f"| {strategy} | {pinned:.2f} µs | {one:.2f} µs | {many:.2f} µs "
            f"| +{one - pinned:.2f} µs, +{many - pinned:.2f} µs |"
        )


if __name__ == "__main__":
    main()
