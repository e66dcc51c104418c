"""Reading what the gateway reports: /metrics scraped into exact sample values, and captured log events."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.metrics import METRICS


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


@contextlib.contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


def events_named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]
