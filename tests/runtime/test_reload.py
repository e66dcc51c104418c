"""Hot reload of the provider table: file edits, Kubernetes' symlink swap and SIGHUP reload it; a bad table is
refused and the running one kept; requests in flight finish on the table they started with."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from gateway.config.filestamp import stamp
from gateway.config.providers import load_table
from gateway.runtime.state import STATE
from tests.fakes.bodies import CHAT, chat, event
from tests.fakes.gateways import ROOT, start_gateway
from tests.fakes.net import free_port, wait_for, wait_listening
from tests.fakes.providers import answering, start_provider
from tests.fakes.tables import entry, table_of
from tests.fakes.telemetry import captured_logs, events_named, samples


def write_table(path: Path, *entries: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"providers": {e["id"]: e for e in entries}}))


async def echo_provider(aiohttp_server: Any, name: str) -> str:
    return (await start_provider(aiohttp_server, answering({"served_by": name}))).url


async def test_an_edited_file_is_reloaded(aiohttp_client, aiohttp_server, tmp_path) -> None:
    one, two = await echo_provider(aiohttp_server, "one"), await echo_provider(aiohttp_server, "two")
    path = tmp_path / "providers.yaml"
    write_table(path, entry("a", one))
    gw = await start_gateway(
        aiohttp_client, load_table(path, {}), reload_interval=0.05, telemetry_enable=True, telemetry_metrics_port=0
    )
    state = gw.app[STATE]
    outcomes: list[str] = []
    state.reload_listeners.append(outcomes.append)
    assert (await (await gw.client.post(CHAT, json=chat("a/m"))).json()) == {"served_by": "one"}

    with captured_logs() as logs:
        write_table(path, entry("a", two), entry("b", one, timeouts={"total": 9}, models=["big-model"]))
        await wait_for(lambda: "b" in state.table.providers)
    assert (await (await gw.client.post(CHAT, json=chat("a/m"))).json()) == {"served_by": "two"}
    assert (await (await gw.client.post(CHAT, json=chat("b/m"))).json()) == {"served_by": "one"}
    assert (await gw.client.post(CHAT, json=chat("b/big-model"))).status == 200
    # The new table's declared models are metric labels from now on; others stay `other`.
    metrics = await samples(gw.app)
    duration = "gen_ai_server_request_duration_seconds_count"
    assert metrics.value(duration, **genai("b", "big-model")) == 1
    assert metrics.value(duration, **genai("b", "other")) == 1
    assert metrics.value("llmgw_config_loads_total", result="success") == 2  # the start, then the reload
    # What is derived from the table is rebuilt with it.
    assert state.policies["b"].chat.whole == 9.0
    assert (dict(state.config_loads), outcomes) == ({"success": 1}, ["success"])
    (line,) = events_named(logs, "provider table reloaded")
    assert (line["added"], line["removed"], line["changed"], line["reason"]) == (["b"], [], ["a"], "file changed")


def genai(provider: str, model: str) -> dict[str, str]:
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": provider,
        "gen_ai_request_model": model,
        "error_type": "",
    }


async def test_a_bad_table_is_refused_and_the_running_one_kept(aiohttp_client, aiohttp_server, tmp_path) -> None:
    one = await echo_provider(aiohttp_server, "one")
    path = tmp_path / "providers.yaml"
    write_table(path, entry("a", one))
    gw = await start_gateway(
        aiohttp_client, load_table(path, {}), reload_interval=0.05, telemetry_enable=True, telemetry_metrics_port=0
    )
    state = gw.app[STATE]
    running = state.table

    with captured_logs() as logs:
        path.write_text("providers:\n  a: {id: a, url: 'ftp://x', auth_type: nope}\n")
        await wait_for(lambda: state.config_loads["failure"] == 1)
        await asyncio.sleep(0.2)  # several more polls: the same broken file is reported once
    assert state.table is running
    assert dict(state.config_loads) == {"failure": 1}
    (line,) = events_named(logs, "provider table rejected; keeping the running one")
    assert line["log_level"] == "error"
    assert any(p.startswith("providers.a.auth_type:") for p in line["problems"])
    assert any(p.startswith("providers.a:") and "endpoints" in p for p in line["problems"])
    assert (await (await gw.client.post(CHAT, json=chat("a/m"))).json()) == {"served_by": "one"}

    path.write_text("providers: [unclosed\n")
    await wait_for(lambda: state.config_loads["failure"] == 2)
    write_table(path, entry("a", one), entry("c", one))
    await wait_for(lambda: state.config_loads["success"] == 1)
    assert set(state.table.providers) == {"a", "c"}
    # The `config loads` metric: the load at start, then each reload by outcome.
    metrics = await samples(gw.app)
    assert metrics.value("llmgw_config_loads_total", result="success") == 2
    assert metrics.value("llmgw_config_loads_total", result="failure") == 2


async def test_the_kubernetes_configmap_symlink_swap_is_seen(aiohttp_client, aiohttp_server, tmp_path) -> None:
    """A mounted ConfigMap: providers.yaml -> ..data/providers.yaml, ..data -> ..<timestamp>; the update replaces
    ..data atomically, so the mounted name never changes."""
    one, two = await echo_provider(aiohttp_server, "one"), await echo_provider(aiohttp_server, "two")
    first, second = tmp_path / "..2026_01_01", tmp_path / "..2026_01_02"
    first.mkdir()
    second.mkdir()
    write_table(first / "providers.yaml", entry("a", one))
    write_table(second / "providers.yaml", entry("a", two))
    # Same size and, on a coarse clock, the same mtime: only the resolved path and inode tell them apart.
    os.utime(second / "providers.yaml", ns=(0, os.stat(first / "providers.yaml").st_mtime_ns))
    (tmp_path / "..data").symlink_to(first.name)
    mounted = tmp_path / "providers.yaml"
    mounted.symlink_to("..data/providers.yaml")
    gw = await start_gateway(aiohttp_client, load_table(mounted, {}), reload_interval=0.05)
    assert (await (await gw.client.post(CHAT, json=chat("a/m"))).json()) == {"served_by": "one"}
    before = stamp(str(mounted))

    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert stamp(str(mounted)) != before
    await wait_for(lambda: gw.app[STATE].config_loads["success"] == 1)
    assert (await (await gw.client.post(CHAT, json=chat("a/m"))).json()) == {"served_by": "two"}


async def test_requests_in_flight_finish_on_the_table_they_started_with(
    aiohttp_client, aiohttp_server, tmp_path
) -> None:
    release = asyncio.Event()

    async def held_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(1))
        await release.wait()
        await response.write(event(2))
        await response.write_eof()
        return response

    old = (await start_provider(aiohttp_server, held_stream)).url
    new = await echo_provider(aiohttp_server, "new")
    path = tmp_path / "providers.yaml"
    write_table(path, entry("a", old))
    gw = await start_gateway(
        aiohttp_client, load_table(path, {}), reload_interval=0.05, stream_idle_timeout=30, write_timeout=30
    )
    in_flight = await gw.client.post(CHAT, json=chat("a/m", stream=True))
    assert await in_flight.content.readuntil(b"\n\n") == event(1)

    write_table(path, entry("b", new))  # provider a is gone from the new table
    await wait_for(lambda: gw.app[STATE].config_loads["success"] == 1)
    refused = await gw.client.post(CHAT, json=chat("a/m"))
    assert refused.status == 404
    assert (await (await gw.client.post(CHAT, json=chat("b/m"))).json()) == {"served_by": "new"}

    release.set()
    assert await in_flight.content.read() == event(2)
    assert (await gw.settled(3))[0].error_type is None


async def test_a_table_built_in_code_starts_no_watcher(aiohttp_client, aiohttp_server) -> None:
    gw = await start_gateway(aiohttp_client, table_of(entry("a", "http://127.0.0.1:1")), reload_interval=0.01)
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "provider-table-watcher" not in names
    assert gw.app[STATE].config_loads == {}


def test_sighup_reloads_a_running_gateway_process(tmp_path) -> None:
    """The real process: a new provider appears after SIGHUP, with file polling turned off."""
    path = tmp_path / "providers.yaml"
    write_table(path, entry("a", "http://127.0.0.1:9/v1"))
    port = free_port()
    env = {**os.environ, "PROVIDERS_RELOAD_INTERVAL": "0", "ENVIRONMENT": "production"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--providers", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(port, process)
        url = f"http://127.0.0.1:{port}/proxy/b/models"
        assert http_status(url) == 404
        # b needs a key it does not have: the gateway now knows it, so 503 (not configured) instead of 404.
        write_table(path, entry("a", "http://127.0.0.1:9/v1"), entry("b", "http://127.0.0.1:9/v1", "bearer"))
        time.sleep(0.2)
        assert http_status(url) == 404  # no polling: the file alone changes nothing
        process.send_signal(signal.SIGHUP)
        for _ in range(200):
            if http_status(url) != 404:
                break
            time.sleep(0.05)
        assert http_status(url) == 503
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    lines = output.decode().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert [e["reason"] for e in events if e["event"] == "provider table reloaded"] == ["signal"], lines
    assert not any("Traceback" in line for line in lines)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_stamp_follows_symlinks_and_tells_versions_apart(tmp_path) -> None:
    target = tmp_path / "t.yaml"
    target.write_text("a")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    first = stamp(str(link))
    assert first is not None and first.resolved == str(target)
    target.write_text("bb")
    assert stamp(str(link)) != first
    assert stamp(str(tmp_path / "missing.yaml")) is None
    assert stamp(str(tmp_path)) is None  # a directory is not a table
    assert stamp("") is None


@pytest.mark.parametrize("interval", ["0", "off"])
def test_polling_can_be_turned_off(interval) -> None:
    from gateway.config.settings import Settings

    assert Settings.from_env({"PROVIDERS_RELOAD_INTERVAL": interval}).reload_interval == 0.0
