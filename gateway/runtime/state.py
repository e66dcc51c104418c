"""What a running gateway holds: its settings and the current provider table with what is built from them.

A reload swaps the table and everything derived from it in one step (no await in between); a request reads them
once, at its start, so it finishes on the table it started with.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway.config.providers import ProviderTable
from gateway.config.registry import Registration, merge
from gateway.config.settings import Settings
from gateway.routing.deployments import Fleet, Views
from gateway.routing.filters import ModelFilter
from gateway.runtime.responses import ResponseOwners
from gateway.upstream.timeouts import CallPolicy, call_policies

ReloadListener = Callable[[str], None]
EnvSource = Callable[[], Mapping[str, str]]


def _environ() -> Mapping[str, str]:
    return os.environ


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
    # The table as its file says it, and the Inference API's registered providers joined to it (`table` is the
    # two merged); registrations that could not join, with why (runtime/registry.py logs them).
    file_table: ProviderTable = field(init=False)
    registered: tuple[Registration, ...] = ()
    registry_problems: Mapping[str, str] = field(default_factory=dict)
    # Where registered providers' keys are read (the process environment), at each merge.
    env: EnvSource = _environ

    def __post_init__(self) -> None:
        self.swap(self.table)

    def swap(self, table: ProviderTable, settings: Settings | None = None) -> None:
        """Install a validated file table (and settings), the registered providers joined to it: build everything
        first, then assign without awaiting."""
        settings = settings or self.settings
        file_table = table
        merged = merge(file_table, self.registered, self.env())
        table = merged.table
        # Built against this table's provider names: an entry naming one of them (`openai/*`) matches its ids only.
        model_filter = ModelFilter.of(settings.allowed_models, settings.disallowed_models, table.names)
        policies = call_policies(settings, table)
        groups = self.fleet.bind(table)
        self.settings, self.table, self.model_filter, self.policies = settings, table, model_filter, policies
        self.groups, self.file_table, self.registry_problems = groups, file_table, merged.problems

    def register(self, registered: tuple[Registration, ...]) -> None:
        """Install the registry's providers (as read from the store) on the current file table, in one step."""
        self.registered = registered
        self.swap(self.file_table)

    def record_load(self, outcome: str) -> None:
        self.config_loads[outcome] += 1
        for listener in self.reload_listeners:
            listener(outcome)


STATE = web.AppKey("state", GatewayState)
