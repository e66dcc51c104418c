"""Graceful shutdown of a real gateway process (`python -m gateway`) in front of a fake provider that streams
on command: SIGTERM turns /ready to 503, closes the listener, lets the open stream finish and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.config.settings import Settings
from gateway.errors import ConfigError
from tests.fakes.bodies import CHAT, DONE, chat
from tests.fakes.net import free_port
from tests.fakes.providers import FIRST_CHUNK, STOP_CHUNK, WORD_CHUNKS, ChatProvider

# The `held` stream of ChatProvider: FIRST at once, then nothing until `release` is set, then SECOND and DONE.
FIRST = FIRST_CHUNK
SECOND = WORD_CHUNKS + STOP_CHUNK
POLL = 0.05
POLL_LIMIT = 400  # 20 s of polling at most, for any one state change


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


@pytest.fixture
async def provider(aiohttp_server) -> AsyncIterator[tuple[ChatProvider, TestServer]]:
    fake = await ChatProvider().start(aiohttp_server)
    yield fake, fake.server
    fake.release.set()


async def start_gateway(tmp_path: Path, upstream: TestServer, **env: str) -> Gateway:
    table = tmp_path / "providers.yaml"
    table.write_text(
        f"""providers:
  fake:
    id: fake
    url: http://127.0.0.1:{upstream.port}/v1
    auth_type: none
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
""",
        "utf-8",
    )
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--providers",
            str(table),
            env={"PATH": os.environ.get("PATH", ""), **env},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    gateway = Gateway(process, f"http://127.0.0.1:{port}", log)
    for _ in range(POLL_LIMIT):
        if await status_of(gateway.url + "/health") == 200:
            return gateway
        assert process.returncode is None, gateway.output()
        await asyncio.sleep(POLL)
    raise AssertionError(f"the gateway did not start:\n{gateway.output()}")


async def answer_of(url: str) -> tuple[int | None, str | None]:
    """Status and Connection header of a GET on a new connection; (None, None) when the connection is refused."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, response.headers.get("Connection")
    except aiohttp.ClientConnectorError:
        return None, None


async def status_of(url: str) -> int | None:
    return (await answer_of(url))[0]


async def wait_for_status(url: str, wanted: int | None) -> str | None:
    """Poll until `url` answers `wanted` (None: refused); return that answer's Connection header."""
    seen: list[int | None] = []
    for _ in range(POLL_LIMIT):
        status, connection = await answer_of(url)
        seen.append(status)
        if status == wanted:
            return connection
        await asyncio.sleep(POLL)
    raise AssertionError(f"never saw {wanted} at {url}; saw {seen[-5:]}")


async def open_stream(session: aiohttp.ClientSession, gateway: Gateway) -> aiohttp.ClientResponse:
    response = await session.post(gateway.url + CHAT, json=chat("fake/held", stream=True))
    assert response.status == 200
    assert await response.content.readexactly(len(FIRST)) == FIRST
    return response


async def read_rest(response: aiohttp.ClientResponse) -> bytes:
    rest = b""
    try:
        async for chunk in response.content.iter_any():
            rest += chunk
    except aiohttp.ClientPayloadError:
        pass  # the gateway cut the stream: the bytes so far are what the test checks
    return rest


async def exit_status(gateway: Gateway, within: float) -> int:
    try:
        async with asyncio.timeout(within):
            return await gateway.process.wait()
    except TimeoutError:
        gateway.process.kill()
        await gateway.process.wait()
        raise AssertionError(f"the gateway did not exit within {within}s:\n{gateway.output()}") from None


async def test_sigterm_drains_an_open_stream_and_exits_zero(provider, tmp_path: Path) -> None:
    fake, upstream = provider
    gateway = await start_gateway(tmp_path, upstream, SERVER_DRAIN_TIMEOUT="20s", SERVER_SHUTDOWN_DELAY="2s")
    async with aiohttp.ClientSession() as session:
        stream = await open_stream(session, gateway)
        assert await answer_of(gateway.url + "/ready") == (200, None)

        gateway.signal(signal.SIGTERM)
        # Unready, answered on a new connection while the listener stays open for the shutdown delay, and that
        # connection is not kept; then no new connections at all.
        assert await wait_for_status(gateway.url + "/ready", 503) == "close"
        await wait_for_status(gateway.url + "/health", None)
        assert gateway.process.returncode is None, "the gateway exited with a stream still open"

        fake.release.set()
        assert await read_rest(stream) == SECOND + DONE
        stream.release()
    assert await exit_status(gateway, within=20) == 0, gateway.output()
    events = [json.loads(line)["event"] for line in gateway.output().splitlines() if line.startswith("{")]
    assert events[-1] == "stopped"


async def test_drain_timeout_cuts_a_stream_that_does_not_end_and_still_exits_zero(provider, tmp_path: Path) -> None:
    fake, upstream = provider
    gateway = await start_gateway(tmp_path, upstream, SERVER_DRAIN_TIMEOUT="2s")
    async with aiohttp.ClientSession() as session:
        stream = await open_stream(session, gateway)
        gateway.signal(signal.SIGTERM)
        # No shutdown delay: the listener closes at once; the stream is held until the drain time runs out.
        await wait_for_status(gateway.url + "/health", None)
        assert await exit_status(gateway, within=20) == 0, gateway.output()
        assert await read_rest(stream) == b""
        stream.release()
    assert not fake.release.is_set()


async def test_second_signal_stops_at_once(provider, tmp_path: Path) -> None:
    fake, upstream = provider
    # A drain budget far beyond the wait below: only the second signal can explain a prompt exit.
    gateway = await start_gateway(tmp_path, upstream, SERVER_DRAIN_TIMEOUT="100s", SERVER_SHUTDOWN_DELAY="1s")
    async with aiohttp.ClientSession() as session:
        stream = await open_stream(session, gateway)
        gateway.signal(signal.SIGTERM)
        await wait_for_status(gateway.url + "/ready", 503)
        await wait_for_status(gateway.url + "/health", None)
        assert gateway.process.returncode is None

        gateway.signal(signal.SIGTERM)
        assert await exit_status(gateway, within=20) == 1, gateway.output()
        assert await read_rest(stream) == b""
        stream.release()
    assert "stopped at once on a second signal" in gateway.output()


async def test_idle_gateway_exits_zero_on_sigint(provider, tmp_path: Path) -> None:
    _, upstream = provider
    gateway = await start_gateway(tmp_path, upstream)
    gateway.signal(signal.SIGINT)
    assert await exit_status(gateway, within=20) == 0, gateway.output()


def test_drain_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"SERVER_DRAIN_TIMEOUT": "40s", "SERVER_SHUTDOWN_DELAY": "5s"})
    assert (settings.drain_timeout, settings.shutdown_delay) == (40.0, 5.0)
    assert (Settings().drain_timeout, Settings().shutdown_delay) == (25.0, 0.0)
    assert Settings.from_env({"SERVER_SHUTDOWN_DELAY": "0s"}).shutdown_delay == 0.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVER_DRAIN_TIMEOUT": "0s"}, "SERVER_DRAIN_TIMEOUT: must be above zero"),
        ({"SERVER_SHUTDOWN_DELAY": "-1"}, "SERVER_SHUTDOWN_DELAY: must be zero or more"),
        ({"SERVER_SHUTDOWN_DELAY": "25s"}, "SERVER_SHUTDOWN_DELAY must be below SERVER_DRAIN_TIMEOUT"),
    ],
)
def test_bad_drain_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert message in caught.value.render()
