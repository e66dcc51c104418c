"""The guard's scenarios (`bench.instructions`) against a real gateway, without valgrind: each request is served
and its answer is byte for byte the one the guard expects, so `make bench-instructions` measures what it says."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import pytest

from bench import instructions
from bench.instructions import HOST, PROVIDERS_YAML, SCENARIOS, Client, free_port, gateway_env, upstream, wait_healthy

PER_SCENARIO = 3  # requests, over two keep-alive connections


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The gateway as the guard runs it (production, metrics on, the guard's table), on the guard's fake upstream."""
    workdir = tmp_path_factory.mktemp("instructions")
    with upstream(None) as upstream_port:
        providers = workdir / "providers.yaml"
        providers.write_text(PROVIDERS_YAML.format(host=HOST, port=upstream_port))
        port = free_port()
        log = workdir / "gateway.log"
        with log.open("wb") as sink:
            gateway = subprocess.Popen(
                [str(instructions.PYTHON), "-m", "gateway", "--host", HOST, "--port", str(port)]
                + ["--providers", str(providers)],
                cwd=instructions.REPO,
                env=gateway_env(instructions.REPO, upstream_port, port),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            asyncio.run(wait_healthy(port, gateway))
            yield port
        finally:
            instructions.stop(gateway, signal.SIGTERM, 30)
        assert gateway.returncode == 0, log.read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_each_scenario_is_answered_as_the_guard_expects(name: str, gateway_port: int) -> None:
    client = Client(gateway_port, SCENARIOS[name])
    try:
        await client.open(2)
        async with asyncio.timeout(30):
            await client.send(PER_SCENARIO)  # raises on any other status or body
    finally:
        await client.close()


async def test_a_wrong_answer_fails_the_scenario(gateway_port: int) -> None:
    scenario = SCENARIOS["plain"]
    client = Client(gateway_port, scenario)
    client.answer = scenario.answer + b" "
    try:
        await client.open(1)
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="unexpected answer 200")):
            await client.send(1)
    finally:
        await client.close()
