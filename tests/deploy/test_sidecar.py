"""Sidecar mode: deploy/examples/sidecar.yaml is valid Kubernetes, uses exactly what `helm install --set
mode=sidecar` makes, and a real gateway started with those settings listens on 127.0.0.1 only and passes the
example's own probe commands."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.fakes.net import free_port

from .chart import KUBERNETES_VERSIONS, RELEASE, ROOT, Rendered, render, validate

EXAMPLE = ROOT / "deploy" / "examples" / "sidecar.yaml"
POLL = 0.05
POLL_LIMIT = 400


def example_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text("utf-8")) if doc]


def pod_spec() -> dict[str, Any]:
    (deployment,) = [obj for obj in example_objects() if obj["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def gateway_container() -> dict[str, Any]:
    (container,) = [c for c in pod_spec()["initContainers"] if c["name"] == "llm-gateway"]
    return container


def sidecar_chart() -> Rendered:
    return render({"mode": "sidecar"}, name=RELEASE)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_example_is_valid_kubernetes(version: str) -> None:
    for obj in example_objects():
        validate(obj, version)


def test_gateway_is_a_native_sidecar_without_exposed_ports() -> None:
    container = gateway_container()
    assert container["restartPolicy"] == "Always"
    assert "ports" not in container
    context = container["securityContext"]
    assert (context["allowPrivilegeEscalation"], context["readOnlyRootFilesystem"]) == (False, True)
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert pod_spec()["enableServiceLinks"] is False


def test_example_uses_exactly_what_the_chart_makes_in_sidecar_mode() -> None:
    chart = sidecar_chart()
    container = gateway_container()
    config_maps = {obj["metadata"]["name"]: obj for obj in chart.all("ConfigMap")}
    refs = [source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source]
    assert refs == [f"{RELEASE}-settings"] and refs[0] in config_maps
    secrets = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]
    assert secrets == [f"{RELEASE}-provider-keys"]
    assert f"secret generic {secrets[0]}" in EXAMPLE.read_text("utf-8")

    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    providers_file = Path(chart.settings["PROVIDERS_FILE"])
    table_volume = volumes[mounts[str(providers_file.parent)]]
    assert providers_file.name in config_maps[table_volume["configMap"]["name"]]["data"]
    assert "subPath" not in str(container["volumeMounts"])
    assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"] == "64Mi"

    address = f"http://{chart.settings['SERVER_HOST']}:{chart.settings['SERVER_PORT']}"
    assert address == "http://127.0.0.1:8080"
    (app,) = pod_spec()["containers"]
    assert {"name": "OPENAI_BASE_URL", "value": f"{address}/v1"} in app["env"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert address in container[probe]["exec"]["command"][-1]


def probe_command(name: str, port: int) -> list[str]:
    command: list[str] = gateway_container()[name]["exec"]["command"]
    assert command[0] == "python"
    return [sys.executable, *(part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in command[1:])]


async def run_probe(name: str, port: int) -> int:
    process = await asyncio.create_subprocess_exec(
        *probe_command(name, port), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(30):
        return await process.wait()


def refused(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex((host, port)) != 0


async def test_gateway_with_the_sidecar_settings_listens_on_loopback_only(tmp_path: Path) -> None:
    chart = sidecar_chart()
    table = tmp_path / "providers.yaml"
    table.write_text(chart.one("ConfigMap", f"{RELEASE}-providers")["data"]["providers.yaml"], "utf-8")
    port = free_port()
    # The settings ConfigMap as the container's environment; only the port and the file's place differ here.
    env = {**chart.settings, "SERVER_PORT": str(port), "PROVIDERS_FILE": str(table)}
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            env={"PATH": os.environ.get("PATH", ""), **env},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(POLL_LIMIT):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectorError:
                    pass
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(POLL)
            else:
                raise AssertionError(log.read_text())
        # 127.0.0.2 is loopback too: a gateway bound to 0.0.0.0 would answer there.
        assert refused("127.0.0.2", port)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert await run_probe(probe, port) == 0, probe
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0, log.read_text()
    assert await run_probe("readinessProbe", port) != 0
