"""Test helpers for the observability suites: the table and a gateway with metrics on for ChatProvider, and a
/metrics scraper that returns exact sample values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config.providers import ProviderTable, parse_table
from gateway.config.settings import Settings
from gateway.telemetry.metrics import METRICS
from tests.fakes.providers import free_port

PROVIDER_KEY = "sk-fake-provider-key-0123456789"
OTHER_KEY = "xk-second-provider-key-987654"


def table_yaml(port: int, dead_port: int) -> str:
    """`fake` asks for stream usage, `quiet` does not, `down` points at a closed port; all on the fake server."""
    return f"""
providers:
  fake:
    id: fake
    url: http://127.0.0.1:{port}/v1
    auth_type: bearer
    stream_usage: true
    models: [listed-in-table]
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
  quiet:
    id: quiet
    url: http://127.0.0.1:{port}/v1
    auth_type: xheader
    api_key_env: QUIET_SECRET_KEY
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
  down:
    id: down
    url: http://127.0.0.1:{dead_port}/v1
    auth_type: none
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
"""


ENV = {"FAKE_API_KEY": PROVIDER_KEY, "QUIET_SECRET_KEY": OTHER_KEY}


def make_table(port: int, dead_port: int) -> ProviderTable:
    return parse_table(table_yaml(port, dead_port), ENV)


def settings(**overrides: Any) -> Settings:
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


def gateway_app(table: ProviderTable, **overrides: Any) -> web.Application:
    return create_app(settings(**overrides), table)


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    return free_port()


async def scrape(app: web.Application) -> str:
    port = app[METRICS].port
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


@dataclass(frozen=True)
class Samples:
    """Scraped samples by (name, sorted labels); `value` is exact, 0 when the series does not exist."""

    by_key: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    names: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Samples:
        by_key: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                by_key[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(by_key, frozenset(name for name, _ in by_key))

    def value(self, name: str, **labels: str) -> float:
        return self.by_key.get((name, tuple(sorted(labels.items()))), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for n, key in self.by_key if n == name and label in dict(key)}

    def matching(self, name: str, **labels: str) -> Iterable[tuple[dict[str, str], float]]:
        for (n, key), value in self.by_key.items():
            found = dict(key)
            if n == name and all(found.get(k) == v for k, v in labels.items()):
                yield found, value


async def samples(app: web.Application) -> Samples:
    return Samples.parse(await scrape(app))
