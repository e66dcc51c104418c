"""The provider registry across real `python -m gateway` processes: a registration survives a restart (SQLite and
PostgreSQL), and two gateways sharing one PostgreSQL serve each other's registrations, updates and deletions, and
see each other's synced model lists, within the reload interval (polled with a bounded loop, no timing asserted)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fakes.gateways import running
from tests.fakes.net import free_port
from tests.fakes.postgres import PostgresServer
from tests.fakes.providers import SurfacesProvider
from tests.fakes.tables import PROVIDER_KEY

API = "/api/v1/inference"
EU_KEY = "sk-eu-registered-key-4242424242"
POLL = 0.2  # PROVIDERS_RELOAD_INTERVAL of the gateways here
WAIT = 30.0  # the bound of every wait for another replica
_databases = itertools.count()

TABLE = """
providers:
  openai:
    id: openai
    url: {url}
    auth_type: bearer
    endpoints:
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
      models: {{name: list_models, method: GET, endpoint: /models}}
"""


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return str(tmp_path / "usage.db")
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = f"registry_{next(_databases)}"
    server.psql(f"CREATE DATABASE {name}")
    return server.url(name)


@contextlib.contextmanager
def _gateway(providers: Path, store: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "USAGE_STORE": store,
        "PROVIDERS_RELOAD_INTERVAL": f"{POLL}s",
        "REGISTRY_WRITE_ENABLE": "true",
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_EU_API_KEY": EU_KEY,
        "ENVIRONMENT": "production",
    }
    args = ["gateway", "--host", "127.0.0.1", "--port", str(port), "--providers", str(providers)]
    with running(args, env, port):
        yield f"http://127.0.0.1:{port}{API}"


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    async with session.request(method, url, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, orjson.loads(await response.read())


async def _until(session: aiohttp.ClientSession, method: str, url: str, body: Any, status: int) -> Any:
    """Call until the answer has `status` (a store still opening, a replica not yet polled), within WAIT."""
    got: tuple[int, Any] = (0, None)
    for _ in range(int(WAIT / 0.05)):
        got = await _call(session, method, url, body)
        if got[0] == status:
            return got[1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{method} {url}: still {got} after {WAIT}s")


CHAT = {"model": "gpt-4o", "provider": "openai-eu", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_registration_survives_a_restart(
    aiohttp_server: Any, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    openai = await SurfacesProvider().start(aiohttp_server)
    providers = tmp_path / "providers.yaml"
    providers.write_text(TABLE.format(url="https://api.openai.com/v1"), "utf-8")
    store = _store(kind, tmp_path, request)
    body = {"name": "openai-eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY", "url": f"{openai.url}/v1"}
    async with aiohttp.ClientSession() as session:
        with _gateway(providers, store) as api:
            created = await _until(session, "POST", f"{api}/providers", body, 201)
        with _gateway(providers, store) as api:
            # Read from the store at start-up: served as soon as the first read is in.
            await _until(session, "POST", f"{api}/chat", CHAT, 200)
            assert openai.last.headers["Authorization"] == f"Bearer {EU_KEY}"
            status, again = await _call(session, "GET", f"{api}/providers/{created['data']['id']}")
    assert status == 200 and again == created


async def test_two_gateways_on_one_postgresql_serve_each_others_registrations(
    aiohttp_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    eu = await SurfacesProvider().start(aiohttp_server)
    moved = await SurfacesProvider(models=("moved-model",)).start(aiohttp_server)
    providers = tmp_path / "providers.yaml"
    providers.write_text(TABLE.format(url=f"{eu.url}/v1"), "utf-8")
    store = _store("postgresql", tmp_path, request)
    body = {"name": "openai-eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY", "url": f"{eu.url}/v1"}
    async with aiohttp.ClientSession() as session:
        with _gateway(providers, store) as a, _gateway(providers, store) as b:
            created = (await _until(session, "POST", f"{a}/providers", body, 201))["data"]
            # B learns of it from the store within its reload interval.
            answer = await _until(session, "POST", f"{b}/chat", CHAT, 200)
            assert answer["data"]["provider"] == "openai-eu"
            assert eu.last.headers["Authorization"] == f"Bearer {EU_KEY}"
            status, seen = await _call(session, "GET", f"{b}/providers/openai-eu")
            assert status == 200 and seen["data"]["configured"] is True and seen["data"]["id"] == created["id"]

            # An update through B (another URL) reaches A.
            status, _ = await _call(session, "PUT", f"{b}/providers/{created['id']}", {"url": f"{moved.url}/v1"})
            assert status == 200
            for _ in range(int(WAIT / 0.05)):
                await _until(session, "POST", f"{a}/chat", CHAT, 200)
                if moved.requests:
                    break
                await asyncio.sleep(0.05)
            assert moved.last.path == "/v1/chat/completions"
            assert moved.last.headers["Authorization"] == f"Bearer {EU_KEY}"

            # A model list synced through A is listed by B.
            status, synced = await _call(session, "POST", f"{a}/models/sync", {"provider": "openai-eu"})
            assert status == 200 and synced["data"]["count"] == 1
            status, listed = await _call(session, "GET", f"{b}/models?provider=openai-eu")
            assert status == 200
            assert listed["data"] == [
                {
                    "id": "moved-model",
                    "provider": "openai-eu",
                    "ownedBy": "fake",
                    "created": 1,
                    "syncedAt": synced["data"]["syncedAt"],
                }
            ]

            # Deleted through A: B stops serving it.
            assert (await _call(session, "DELETE", f"{a}/providers/openai-eu"))[0] == 200
            gone = await _until(session, "POST", f"{b}/chat", CHAT, 404)
            assert gone == {
                "success": False,
                "error": {
                    "code": "NOT_FOUND",
                    "message": "unknown provider 'openai-eu' (requested for model 'gpt-4o')",
                },
            }
