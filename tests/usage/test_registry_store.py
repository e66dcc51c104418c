"""The registry's tables (migration 4) in both stores (usage/registry.py): registrations added once per name,
replaced, removed with their synced list; a sync replacing a provider's stored list; only variable names stored."""

from __future__ import annotations

from gateway.config.registry import Registration
from gateway.usage import registry as stored
from gateway.usage.registry import SyncedModel
from gateway.usage.store import Store


def _reg(pid: str, name: str, **fields: object) -> Registration:
    values: dict[str, object] = {"env_var": "EU_API_KEY", "created": 100.0, "updated": 100.0}
    values.update(fields)
    return Registration(id=pid, name=name, type="openai", **values)  # type: ignore[arg-type]


async def test_registrations_round_trip(store: Store) -> None:
    chat = {"chat": {"name": "chat", "method": "POST", "endpoint": "/v2/chat"}}
    first = _reg("a1", "eu", default_model="gpt-4o", url="https://eu.example.com/v1", endpoints=chat)
    assert await stored.add(store, first)
    assert await stored.add(store, _reg("b2", "us", created=200.0, updated=200.0))
    assert not await stored.add(store, _reg("c3", "eu"))  # the name is taken
    assert not await stored.add(store, _reg("a1", "other"))  # so is the id
    assert await stored.registrations(store) == (first, _reg("b2", "us", created=200.0, updated=200.0))
    # No column holds anything but the variable's name.
    assert await store.fetch("SELECT env_var FROM inference_providers ORDER BY id", ()) == [
        ("EU_API_KEY",),
        ("EU_API_KEY",),
    ]


async def test_replace_and_remove_carry_the_synced_list(store: Store) -> None:
    assert await stored.add(store, _reg("a1", "eu"))
    assert await stored.add(store, _reg("b2", "us"))
    at = await stored.store_models(store, "eu", [("m1", "fake", 1), ("m2", None, 2), ("m1", "fake", 1)])
    assert await stored.synced(store, "eu") == [
        SyncedModel("eu", "m1", "fake", 1, at),
        SyncedModel("eu", "m2", None, 2, at),
    ]
    # A new name taken by another registration: refused, nothing changed.
    assert not await stored.replace(store, _reg("a1", "us", updated=300.0), "eu")
    assert [r.name for r in await stored.registrations(store)] == ["eu", "us"]
    # Renamed: its synced list follows.
    renamed = _reg("a1", "eu-west", updated=300.0)
    assert await stored.replace(store, renamed, "eu")
    assert (await stored.registrations(store))[0] == renamed
    assert [m.provider for m in await stored.synced(store)] == ["eu-west", "eu-west"]
    # A second sync replaces the list.
    later = await stored.store_models(store, "eu-west", [("m3", "x", 3)])
    assert await stored.synced(store) == [SyncedModel("eu-west", "m3", "x", 3, later)]
    assert await stored.remove(store, renamed)
    assert not await stored.remove(store, renamed)
    assert await stored.synced(store) == []
    assert [r.name for r in await stored.registrations(store)] == ["us"]


async def test_write_reports_the_rows_each_statement_changed(store: Store) -> None:
    await stored.store_models(store, "p", [("a", None, 0), ("b", None, 0)])
    changed = await store.write(
        [
            ("UPDATE inference_models SET owned_by = ? WHERE provider = ?", ("o", "p")),
            ("DELETE FROM inference_models WHERE model = ?", ("a",)),
            ("DELETE FROM inference_models WHERE model = ?", ("nothing",)),
        ]
    )
    assert changed == [2, 1, 0]
