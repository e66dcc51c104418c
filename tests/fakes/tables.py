"""Provider tables: entries shaped like the spec's, a table of one provider, and the tables the access and the
telemetry tests run on, with the provider keys they hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from gateway.config.providers import ProviderTable, env_prefix, parse_table
from tests.fakes.gateways import ROOT
from tests.fakes.net import free_port
from tests.fakes.providers import FakeProvider

PROVIDER_KEY = "sk-fake-provider-key-0123456789"
OTHER_KEY = "xk-second-provider-key-987654"


def entry(pid: str, url: str, auth_type: str = "none", **extra: Any) -> dict[str, Any]:
    """One provider table entry shaped like the spec's x-provider-configs."""
    return {
        "id": pid,
        "url": url,
        "auth_type": auth_type,
        "supports_vision": extra.pop("supports_vision", True),
        "endpoints": {
            "models": {"name": "list_models", "method": "GET", "endpoint": extra.pop("models_endpoint", "/models")},
            "chat": {
                "name": "chat_completions",
                "method": "POST",
                "endpoint": extra.pop("chat_endpoint", "/chat/completions"),
            },
        },
        **extra,
    }


def serving(base: dict[str, Any], **paths: str) -> dict[str, Any]:
    """`base` (an entry) also declaring each endpoint `name=path` (POST): `serving(e, messages="/messages")`."""
    added = {name: {"name": name, "method": "POST", "endpoint": path} for name, path in paths.items()}
    return {**base, "endpoints": {**base["endpoints"], **added}}


def table_of(*entries: dict[str, Any], env: Mapping[str, str] | None = None, **sections: Any) -> ProviderTable:
    """A table of these entries; `sections` are the document's other top-level sections (`body_limits`, ...)."""
    document = {"providers": {e["id"]: e for e in entries}, **sections}
    return parse_table(yaml.safe_dump(document), dict(env or {}), source="test.yaml")


def one_provider(provider: FakeProvider | str, **extra: Any) -> ProviderTable:
    """A table of one provider, `p`, at a fake provider or a URL."""
    return table_of(entry("p", provider if isinstance(provider, str) else provider.url, **extra))


def access_table(url: str) -> ProviderTable:
    """The access tests' table: one provider, `fake`, at `url` (its /v1), serving alpha-* and beta-* models."""
    text = f"""
providers:
  fake:
    id: fake
    url: {url}/v1
    auth_type: bearer
    supports_vision: false
    model_prefixes: [alpha-, beta-]
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
"""
    return parse_table(text, {"FAKE_API_KEY": PROVIDER_KEY})


def telemetry_table_yaml(port: int, dead_port: int) -> str:
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


TELEMETRY_ENV = {"FAKE_API_KEY": PROVIDER_KEY, "QUIET_SECRET_KEY": OTHER_KEY}


def telemetry_table(port: int, dead_port: int) -> ProviderTable:
    return parse_table(telemetry_table_yaml(port, dead_port), TELEMETRY_ENV)


def usage_table(url: str) -> ProviderTable:
    """The usage tests' table: `fake` at a ChatProvider (`url`, its /v1) asking for stream usage, with a price for
    `plain` ($1 in, $2 out, $0.5 cached per million tokens) and a model group `grouped` priced at its deployment."""
    text = f"""
providers:
  fake:
    id: fake
    url: {url}/v1
    auth_type: none
    stream_usage: true
    prices:
      plain: {{input: 1.0, output: 2.0, cached_input: 0.5}}
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
models:
  grouped:
    deployments:
      - {{provider: fake, model: streamer, input_price: 10, output_price: 20}}
"""
    return parse_table(text, {})


def group_table(urls: Mapping[str, str], groups: Mapping[str, Any], **extra: Any) -> ProviderTable:
    """A table of providers `id -> url` (each serving chat and models, `stream_usage` on, and `extra`) with the
    top-level `models:` groups `groups` (name -> {deployments: [...], strategy: ..., ...})."""
    providers = {pid: entry(pid, url, stream_usage=True, **extra) for pid, url in urls.items()}
    return parse_table(yaml.safe_dump({"providers": providers, "models": dict(groups)}), {}, source="test.yaml")


def shipped_table(urls: Mapping[str, str], env: Mapping[str, str] | None = None) -> ProviderTable:
    """The repository's providers.yaml (its prefix rules and all), each provider of `urls` (id -> base URL) moved
    there with a key set (PROVIDER_KEY); the others stay unconfigured, as without their keys, and those that need
    no key (ollama) point at a closed loopback port: tests never look a name up."""
    text = (ROOT / "providers.yaml").read_text("utf-8")
    environ = dict(env or {})
    closed = f"http://127.0.0.1:{free_port()}/v1"
    for pid, entry in yaml.safe_load(text)["providers"].items():
        if pid in urls:
            environ[f"{env_prefix(pid)}_API_URL"] = urls[pid]
            environ.setdefault(f"{env_prefix(pid)}_API_KEY", PROVIDER_KEY)
        elif entry["auth_type"] == "none":
            environ[f"{env_prefix(pid)}_API_URL"] = closed
    return parse_table(text, environ, source="providers.yaml")
