"""Gateways built on the fakes: in this process (the app on a test server, keeping each request's Exchange) with
settings for each suite, or as real `python -m gateway` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.access.auth import CLOCK
from gateway.app import create_app
from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.exchange import EXCHANGE, Exchange
from tests.fakes.net import free_port, wait_listening
from tests.fakes.providers import Handler

ROOT = Path(__file__).resolve().parents[2]  # the repository, where `python -m gateway` runs


def with_limits(base: Settings, seconds: float) -> Settings:
    """`base` with every limit of a request's time at `seconds`."""
    return replace(
        base,
        client_timeout=seconds,
        connect_timeout=seconds,
        response_header_timeout=seconds,
        stream_idle_timeout=seconds,
        read_timeout=seconds,
        write_timeout=seconds,
    )


# Every limit short, for the tests of time limits: a slow fake provider (0.5 s) outwaits them.
SHORT = with_limits(Settings(max_retries=0, retry_backoff=0.01, retry_backoff_max=0.05), 0.3)
# The test gateways' default: retries off unless a test turns them on, and limits small enough that a test relying on
# one ends quickly, large enough that a busy machine (a loaded CI runner) does not trip them where nothing is slow.
TINY = with_limits(SHORT, 1.0)


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def port(self) -> int:
        port = self.client.port
        assert port is not None
        return port

    async def settled(self, count: int = 1) -> list[Exchange]:
        """The first `count` finished exchanges, waiting (bounded) for handlers still ending."""
        for _ in range(500):
            if len(self.exchanges) >= count:
                return self.exchanges
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {len(self.exchanges)} of {count} requests ended")


async def start_gateway(
    aiohttp_client: Any,
    table: ProviderTable,
    settings: Settings = TINY,
    server_kwargs: dict[str, Any] | None = None,
    clock: Callable[[], float] | None = None,
    **changes: Any,
) -> Gateway:
    """The gateway app on a test server; each request's Exchange is kept once its handler has ended. `clock`
    stands in for the wall clock of the rate limits (a budget that refills only when the test says so)."""
    app = create_app(replace(settings, **changes), table)
    if clock is not None:
        app[CLOCK] = clock
    gateway_exchanges: list[Exchange] = []

    @web.middleware
    async def keep(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            gateway_exchanges.append(request[EXCHANGE])

    app.middlewares.append(keep)
    server = TestServer(app)
    # Runner options (as server.py sets them) go to start_server; TestServer itself does not pass them on.
    await server.start_server(**(server_kwargs or {}))
    client = await aiohttp_client(server)
    return Gateway(client, gateway_exchanges)


def auth_settings(**overrides: Any) -> Settings:
    """Client auth on (compression off), with `overrides`."""
    values: dict[str, Any] = {"auth_enable": True, "disable_compression": True}
    values.update(overrides)
    return Settings(**values)


def telemetry_settings(**overrides: Any) -> Settings:
    """Metrics on (on a listener of their own), `fake/blocked` denied, short limits and a 4 KiB body cap; with
    `overrides`."""
    base = Settings(
        host="127.0.0.1",
        telemetry_enable=True,
        telemetry_metrics_port=0,
        disallowed_models=("fake/blocked",),
        response_header_timeout=0.5,
        client_timeout=0.5,
        max_request_body_size=4096,
    )
    return replace(base, **overrides)


def gateway_app(settings: Settings, table: ProviderTable, clock: Callable[[], float] | None = None) -> web.Application:
    """The gateway app, not yet served; `clock` stands in for the wall clock of the rate limits."""
    app = create_app(settings, table)
    if clock is not None:
        app[CLOCK] = clock
    return app


# --- gateway processes ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A `python -m ...` process from the repo root, listening on `port`, stopped (then killed) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def gateway_args(port: int) -> list[str]:
    return ["gateway", "--host", "127.0.0.1", "--port", str(port), "--providers", "config/demo.providers.yaml"]


@contextlib.contextmanager
def demo_gateway() -> Iterator[str]:
    """The demo upstream and a gateway on it (`make run`'s set-up) as processes on free ports: the gateway's URL."""
    demo_port, gw_port = free_port(), free_port()
    env = {**os.environ, "DEMO_API_URL": f"http://127.0.0.1:{demo_port}/v1", "ENVIRONMENT": "production"}
    with (
        running(["gateway.demo", "--port", str(demo_port)], env, demo_port),
        running(gateway_args(gw_port), env, gw_port),
    ):
        yield f"http://127.0.0.1:{gw_port}"
