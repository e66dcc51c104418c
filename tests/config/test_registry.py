"""Registered providers joined to the file's table (config/registry.py), as functions: what a registration takes
from its type, what it overrides, and every registration that cannot join left out with its reason while the rest
of the table stands."""

from __future__ import annotations

from typing import Any

from gateway.config.providers import ProviderTable
from gateway.config.registry import Registration, merge
from tests.fakes.tables import entry, table_of

KEY = "sk-registered-0123456789"


def _file() -> ProviderTable:
    return table_of(
        entry(
            "openai",
            "https://api.openai.com/v1",
            "bearer",
            aliases=["oai"],
            model_prefixes=["gpt-"],
            api_key_env="OPENAI_KEY",
            stream_usage=True,
        ),
        entry("local", "http://127.0.0.1:9/v1"),
        env={"OPENAI_KEY": "sk-file"},
        models={"smart": {"deployments": [{"provider": "openai", "model": "gpt-4o"}]}},
    )


def _reg(name: str, kind: str = "openai", url: str | None = None, endpoints: Any = None) -> Registration:
    return Registration(id=f"id-{name}", name=name, type=kind, env_var="EU_KEY", url=url, endpoints=endpoints or {})


def test_a_registration_takes_its_types_url_auth_and_endpoints_under_its_own_name() -> None:
    file_table = table_of(
        entry(
            "openai", "https://api.openai.com/v1", "bearer", aliases=["oai"], model_prefixes=["gpt-"], stream_usage=True
        ),
        env={"OPENAI_API_KEY": "sk-file"},
    )
    merged = merge(file_table, [_reg("openai-eu")], {"EU_KEY": KEY, "OPENAI_API_KEY": "sk-file"})
    assert merged.problems == {}
    eu = merged.table.providers["openai-eu"]
    assert eu.url == "https://api.openai.com/v1" and eu.auth_type == "bearer" and eu.stream_usage
    assert set(eu.endpoints) == set(file_table.providers["openai"].endpoints)
    assert str(eu.endpoints["chat"].url) == "https://api.openai.com/v1/chat/completions"
    assert dict(eu.headers)[b"Authorization"] == f"Bearer {KEY}".encode()
    # Not the file entry's names or prefixes: `gpt-4o` still resolves to the file's openai, `oai` names it only.
    assert eu.aliases == () and eu.model_prefixes == ()
    assert merged.table.by_prefix("gpt-4o") is merged.table.providers["openai"]
    assert merged.table.lookup("OpenAI-EU") is eu
    assert merged.table.lookup("oai") is merged.table.providers["openai"]
    # The file's table itself is untouched; its kinds carry over.
    assert "openai-eu" not in file_table.providers and merged.table.entries == file_table.entries


def test_overrides_and_a_missing_key() -> None:
    file_table = table_of(entry("openai", "https://api.openai.com/v1", "bearer"), env={"OPENAI_API_KEY": "k"})
    chat = {"name": "chat", "method": "POST", "endpoint": "/v2/chat"}
    registration = _reg("eu", url="https://eu.example.com/v1", endpoints={"chat": chat})
    merged = merge(file_table, [registration], {})
    eu = merged.table.providers["eu"]
    assert eu.url == "https://eu.example.com/v1" and eu.endpoints["chat"].path == "/v2/chat"
    assert eu.endpoints["models"].path == "/models"
    assert not eu.served and eu.unavailable == "missing API key: set EU_KEY"
    assert merged.problems == {}


def test_registrations_that_cannot_join_are_left_out_with_why() -> None:
    file_table = _file()
    registrations = [
        _reg("good"),
        _reg("nokind", kind="nosuch"),
        _reg("openai"),  # the file's own name
        _reg("oai"),  # the file's alias
        _reg("badurl", url="ftp://example.com"),
        _reg("good"),  # twice
        _reg("BAD NAME"),
    ]
    merged = merge(file_table, registrations, {"EU_KEY": KEY})
    assert set(merged.table.providers) == {"openai", "local", "good"}
    assert merged.problems == {
        "nokind": "type 'nosuch' is not a provider of test.yaml",
        "openai": "name 'openai' is a provider of test.yaml",
        "oai": "name 'oai' is a provider of test.yaml",
        "badurl": "providers.badurl.url: 'ftp://example.com' does not match '^https?://[^\\\\s/?#]+(/[^\\\\s?#]*)?$'",
        "good": "registered twice",
        "BAD NAME": "providers: a name does not match ^[a-z][a-z0-9_-]{0,62}$ (value hidden);"
        " providers.BAD NAME.id: 'BAD NAME' does not match '^[a-z][a-z0-9_-]{0,62}$'",
    }
    # The file's groups stay.
    assert merged.table.group("smart") is not None


def test_no_registrations_is_the_file_table_itself() -> None:
    file_table = _file()
    assert merge(file_table, [], {}).table is file_table
