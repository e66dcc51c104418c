"""The registry on a running gateway (runtime/registry.py): rows written to the store by another replica are read
in the background and joined to the table; a row that cannot join is left out and logged while the table stands;
a file reload keeps the registered providers; a store that fails keeps the last registry read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from gateway.config.providers import load_table
from gateway.config.registry import Registration
from gateway.runtime.registry import REGISTRY
from gateway.runtime.state import STATE
from gateway.usage import registry as stored
from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import start_gateway
from tests.fakes.net import wait_for
from tests.fakes.providers import answering, start_provider
from tests.fakes.tables import entry
from tests.fakes.telemetry import captured_logs, events_named, samples
from tests.fakes.usage import store_ready


def _registration(name: str, kind: str, url: str) -> Registration:
    now = time.time()
    return Registration(id=f"id-{name}", name=name, type=kind, env_var="NONE_NEEDED", url=url, created=now, updated=now)


def _write(path: Path, *entries: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"providers": {e["id"]: e for e in entries}}))


async def test_rows_from_elsewhere_join_and_a_bad_one_is_left_out_and_logged(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    upstream = await start_provider(aiohttp_server, answering({"served_by": "registered"}))
    path = tmp_path / "providers.yaml"
    _write(path, entry("local", "http://127.0.0.1:9/v1"), entry("other", "http://127.0.0.1:9/v1"))
    gateway = await start_gateway(
        aiohttp_client,
        load_table(path, {}),
        reload_interval=0.05,
        usage_store=str(tmp_path / "usage.db"),
        telemetry_enable=True,
        telemetry_metrics_port=0,
    )
    await store_ready(gateway.app)
    state, store = gateway.app[STATE], gateway.app[REGISTRY].usage.store
    with captured_logs() as logs:
        # Written as another replica would: straight to the store.
        assert await stored.add(store, _registration("mine", "local", upstream.url))
        assert await stored.add(store, _registration("broken", "nosuch", upstream.url))
        await wait_for(lambda: "mine" in state.table.providers)
    assert (await (await gateway.client.post(CHAT, json=chat("mine/m"))).json()) == {"served_by": "registered"}
    assert "broken" not in state.table.providers
    assert state.registry_problems == {"broken": "type 'nosuch' is not a provider of " + str(path)}
    left_out = events_named(logs, "registered provider left out of the table")
    assert [(e["provider"], e["reason"]) for e in left_out] == [("broken", state.registry_problems["broken"])]
    metrics = await samples(gateway.app)
    assert metrics.value("llmgw_registry_providers", state="joined") == 1
    assert metrics.value("llmgw_registry_providers", state="left_out") == 1
    assert metrics.value("llmgw_registry_read_failures_total") == 0

    # A file reload keeps the registered providers; one whose type the file drops is left out (and logged).
    with captured_logs() as logs:
        _write(path, entry("other", "http://127.0.0.1:9/v1"))
        await wait_for(lambda: "local" not in state.table.providers)
    assert "mine" not in state.table.providers and "other" in state.table.providers
    assert state.registry_problems["mine"] == f"type 'local' is not a provider of {path}"
    assert [e["provider"] for e in events_named(logs, "registered provider left out of the table")] == ["mine"]
    _write(path, entry("local", "http://127.0.0.1:9/v1"), entry("other", "http://127.0.0.1:9/v1"))
    await wait_for(lambda: "mine" in state.table.providers)


async def test_a_failing_store_keeps_the_last_registry_read(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    upstream = await start_provider(aiohttp_server, answering({"served_by": "registered"}))
    path = tmp_path / "providers.yaml"
    _write(path, entry("local", "http://127.0.0.1:9/v1"))
    gateway = await start_gateway(
        aiohttp_client,
        load_table(path, {}),
        reload_interval=0.05,
        usage_store=str(tmp_path / "usage.db"),
        telemetry_enable=True,
        telemetry_metrics_port=0,
    )
    await store_ready(gateway.app)
    registry, state = gateway.app[REGISTRY], gateway.app[STATE]
    assert await stored.add(registry.usage.store, _registration("mine", "local", upstream.url))
    await wait_for(lambda: "mine" in state.table.providers)
    table = state.table
    with captured_logs() as logs:
        await registry.usage.store.close()  # every read fails from now on
        await wait_for(lambda: registry.failures >= 3)
    assert state.table is table
    assert (await (await gateway.client.post(CHAT, json=chat("mine/m"))).json()) == {"served_by": "registered"}
    # Logged once, not at every poll; counted each time.
    assert len(events_named(logs, "provider registry unreadable; keeping the last one read")) == 1
    metrics = await samples(gateway.app)
    assert metrics.value("llmgw_registry_read_failures_total") >= 3  # the poller keeps counting as it runs
    assert metrics.value("llmgw_registry_providers", state="joined") == 1
