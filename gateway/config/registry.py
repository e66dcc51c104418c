"""Registered providers (the Inference API's registry) joined to the file's table: each registration takes the URL,
auth and endpoints of the file entry its `type` names, under a name of its own, with the key read from the variable
it names. A registration that cannot join (unknown type, a taken name, an override the schema refuses) is left out
with the reason; it never breaks the table."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.providers import ModelGroup, Provider, ProviderTable, build_provider, entry_problems, index_table

# Fields of the file entry a registration does not take: its names and model prefixes are the file entry's own
# (a second provider claiming `gpt-` would make the prefix ambiguous).
_NOT_INHERITED = ("aliases", "model_prefixes", "api_key_env")


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    name: str
    type: str  # the id of a file entry
    env_var: str
    default_model: str | None = None
    url: str | None = None
    # Operation -> {name, method, endpoint}, replacing the type's endpoint of that operation (others kept).
    endpoints: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class Merged:
    table: ProviderTable
    # Registration name -> why it is not in the table.
    problems: Mapping[str, str]


def kind(file_table: ProviderTable, name: str) -> str | None:
    """The id of the file entry `name` (an id or alias, any case) names, or None."""
    provider = file_table.lookup(name)
    return provider.id if provider is not None and provider.id in file_table.entries else None


def entry_of(file_table: ProviderTable, registration: Registration) -> tuple[dict[str, Any] | None, str | None]:
    """The table entry a registration makes, or None and why not."""
    pid = kind(file_table, registration.type)
    if pid is None:
        return None, f"type {registration.type!r} is not a provider of {file_table.source or 'the table'}"
    if file_table.lookup(registration.name) is not None:
        return None, f"name {registration.name!r} is a provider of {file_table.source or 'the table'}"
    entry = {k: copy.deepcopy(v) for k, v in file_table.entries[pid].items() if k not in _NOT_INHERITED}
    entry["id"] = registration.name
    entry["api_key_env"] = registration.env_var
    if registration.url is not None:
        entry["url"] = registration.url
    if registration.endpoints:
        entry["endpoints"] = {**entry["endpoints"], **{op: dict(e) for op, e in registration.endpoints.items()}}
    problems = entry_problems(registration.name, entry)
    if problems:
        return None, "; ".join(problems)
    return entry, None


def merge(file_table: ProviderTable, registrations: Sequence[Registration], env: Mapping[str, str]) -> Merged:
    """The file's table with every registration that can join it; the others, with why not."""
    if not registrations:
        return Merged(file_table, {})
    built: dict[str, Provider] = {}
    problems: dict[str, str] = {}
    for registration in registrations:
        entry, problem = entry_of(file_table, registration)
        if entry is None:
            problems[registration.name] = problem or "refused"
            continue
        if registration.name in built:
            problems[registration.name] = "registered twice"
            continue
        try:
            built[registration.name] = build_provider(entry, env)
        except Exception as exc:  # a row the schema passed but the table cannot take: left out, never fatal
            problems[registration.name] = f"cannot be built ({type(exc).__name__})"
    groups: dict[str, ModelGroup] = {group.name: group for group in file_table.groups.values()}
    table = index_table(
        {**file_table.providers, **built}, file_table.source, groups, file_table.body_limits, file_table.entries
    )
    return Merged(table, problems)
