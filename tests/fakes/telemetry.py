"""Test helpers for the observability suites: a scriptable fake provider, a gateway wired to it with metrics on,
and a /metrics scraper that returns exact sample values."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config.providers import ProviderTable, parse_table
from gateway.config.settings import Settings
from gateway.telemetry.metrics import METRICS
from tests.fakes.providers import free_port

PROVIDER_KEY = "sk-fake-provider-key-0123456789"
OTHER_KEY = "xk-second-provider-key-987654"

# What the fake provider answers for each model name.
PLAIN_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
STREAM_USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
STREAM_WORDS = ("Hello", " there", " friend")


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


@dataclass
class ScriptedProvider:
    """Records what reached it; `release` holds the `held` model's stream open until the test sets it."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, "headers": dict(request.headers), "body": None})
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in ("plain", "streamer")]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.seen.append({"path": request.path, "headers": dict(request.headers), "body": body, "raw": raw})
        model = body["model"]
        if model == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if model == "unauth":
            return web.json_response({"error": {"message": "bad key", "type": "invalid_api_key"}}, status=401)
        if model == "slow":
            await asyncio.sleep(5)
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three four five"}}],
                "usage": PLAIN_USAGE,
            }
            return web.json_response(answer, headers={"x-request-id": "req_upstream_1"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # The role-only first chunk carries no content: time to first token must not stop on it.
        await response.write(_chunk({"role": "assistant", "content": ""}))
        if model == "held":
            self.holding.set()
            await self.release.wait()
        for word in STREAM_WORDS:
            await response.write(_chunk({"content": word}))
        if model == "truncated":
            # Break off mid-answer without the terminating chunk.
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write(_chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            tail = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": STREAM_USAGE}
            await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


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


def chat(model: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}
