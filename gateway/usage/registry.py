"""The Inference API's registry in the usage store: registered providers (`inference_providers`) and the model
lists /models/sync stored (`inference_models`). Every read is bounded; no key is ever stored, only the name of
the variable that holds one."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from gateway.config.registry import Registration
from gateway.usage.store import Row, Store

# The registry's size: a registration beyond it is refused, and a read never returns more.
MAX_PROVIDERS = 1000
# One provider's stored list, and one listing's rows.
MAX_MODELS = 20_000

_PROVIDER_COLUMNS = "id, name, type, default_model, env_var, url, endpoints, created, updated"


class SyncedModel(NamedTuple):
    provider: str
    model: str
    owned_by: str | None
    created: int
    synced_at: float


def _registration(row: Row) -> Registration:
    pid, name, kind, default_model, env_var, url, endpoints, created, updated = row
    return Registration(
        id=pid,
        name=name,
        type=kind,
        env_var=env_var,
        default_model=default_model,
        url=url,
        endpoints=orjson.loads(endpoints) if endpoints else {},
        created=float(created),
        updated=float(updated),
    )


def _values(r: Registration) -> tuple[Any, ...]:
    endpoints = orjson.dumps(r.endpoints).decode() if r.endpoints else None
    return (r.id, r.name, r.type, r.default_model, r.env_var, r.url, endpoints, r.created, r.updated)


async def registrations(store: Store) -> tuple[Registration, ...]:
    rows = await store.fetch(
        f"SELECT {_PROVIDER_COLUMNS} FROM inference_providers ORDER BY created, id LIMIT ?", (MAX_PROVIDERS,)
    )
    return tuple(_registration(row) for row in rows)


async def add(store: Store, registration: Registration) -> bool:
    """Register; False when the name or id is taken (by another replica since this one looked, too)."""
    changed = await store.write(
        [
            (
                f"INSERT INTO inference_providers ({_PROVIDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                _values(registration),
            )
        ]
    )
    return changed == [1]


async def replace(store: Store, registration: Registration, old_name: str) -> bool:
    """Store a registration's new fields under its id (a list synced under its old name follows a new name); False
    when it is gone or its new name is taken."""
    values = _values(registration)
    statements: list[tuple[str, Sequence[Any]]] = [
        (
            "UPDATE inference_providers SET name = ?, type = ?, default_model = ?, env_var = ?, url = ?,"
            " endpoints = ?, updated = ?"
            " WHERE id = ? AND NOT EXISTS (SELECT 1 FROM inference_providers o WHERE o.name = ? AND o.id <> ?)",
            (*values[1:7], values[8], registration.id, registration.name, registration.id),
        )
    ]
    if registration.name != old_name:
        statements.append(
            (
                "UPDATE inference_models SET provider = ? WHERE provider = ?"
                " AND EXISTS (SELECT 1 FROM inference_providers WHERE id = ? AND name = ?)",
                (registration.name, old_name, registration.id, registration.name),
            )
        )
    changed = await store.write(statements)
    return changed[0] == 1


async def remove(store: Store, registration: Registration) -> bool:
    """Unregister, with the model list synced under its name; False when it was already gone."""
    changed = await store.write(
        [
            ("DELETE FROM inference_providers WHERE id = ?", (registration.id,)),
            ("DELETE FROM inference_models WHERE provider = ?", (registration.name,)),
        ]
    )
    return changed[0] == 1


async def store_models(store: Store, provider: str, models: Iterable[tuple[str, str | None, int]]) -> float:
    """Replace `provider`'s stored list with `models` ((id, owned by, created)) in one transaction; the time."""
    now = time.time()
    unique = {model: (owned_by, created) for model, owned_by, created in models}
    statements: list[tuple[str, Sequence[Any]]] = [("DELETE FROM inference_models WHERE provider = ?", (provider,))]
    statements += [
        (
            "INSERT INTO inference_models (provider, model, owned_by, created, synced_at) VALUES (?, ?, ?, ?, ?)",
            (provider, model, owned_by, created, now),
        )
        for model, (owned_by, created) in list(unique.items())[:MAX_MODELS]
    ]
    await store.write(statements)
    return now


async def synced(store: Store, provider: str | None = None) -> list[SyncedModel]:
    """The stored lists (one provider's, or every one's), at most MAX_MODELS rows."""
    where, params = ("WHERE provider = ?", [provider]) if provider is not None else ("", [])
    rows = await store.fetch(
        f"SELECT provider, model, owned_by, created, synced_at FROM inference_models {where}"
        " ORDER BY provider, model LIMIT ?",
        [*params, MAX_MODELS],
    )
    return [SyncedModel(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in rows]
