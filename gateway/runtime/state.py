"""What a running gateway holds: its settings and the current provider table with what is built from them.

A reload swaps the table and everything derived from it in one step (no await in between); a request reads them
once, at its start, so it finishes on the table it started with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.routing.deployments import Fleet, Views
from gateway.routing.filters import ModelFilter
from gateway.runtime.responses import ResponseOwners
from gateway.upstream.timeouts import CallPolicy, call_policies

ReloadListener = Callable[[str], None]


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    table: ProviderTable
    model_filter: ModelFilter = field(init=False)
    draining: bool = False
    # Per provider id: time limits and retry rules, merged from the settings and the table's overrides.
    policies: Mapping[str, CallPolicy] = field(init=False)
    # Outcomes of table (re)loads: "success" / "failure" -> count. Listeners are called with each outcome
    # (the metrics module can turn them into a `config loads` counter).
    config_loads: Counter[str] = field(default_factory=Counter)
    reload_listeners: list[ReloadListener] = field(default_factory=list)
    # The model groups' deployments: their live measurements and breakers (kept across reloads for the deployments
    # a new table keeps), and the current table's view of each group, swapped with the table.
    fleet: Fleet = field(default_factory=Fleet)
    groups: Views = field(init=False)
    # Which provider made each response of the Responses API; kept across table reloads.
    responses: ResponseOwners = field(default_factory=ResponseOwners)

    def __post_init__(self) -> None:
        self.swap(self.table)

    def swap(self, table: ProviderTable, settings: Settings | None = None) -> None:
        """Install a validated table (and settings): build everything first, then assign without awaiting."""
        settings = settings or self.settings
        # Built against this table's provider names: an entry naming one of them (`openai/*`) matches its ids only.
        model_filter = ModelFilter.of(settings.allowed_models, settings.disallowed_models, table.names)
        policies = call_policies(settings, table)
        groups = self.fleet.bind(table)
        self.settings, self.table, self.model_filter, self.policies = settings, table, model_filter, policies
        self.groups = groups

    def record_load(self, outcome: str) -> None:
        self.config_loads[outcome] += 1
        for listener in self.reload_listeners:
            listener(outcome)


STATE = web.AppKey("state", GatewayState)
