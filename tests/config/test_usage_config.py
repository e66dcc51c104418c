"""The usage store's settings and the table's prices: what USAGE_* accept and refuse, and the price of a request
from a provider's `prices` block or a model group's deployment."""

from __future__ import annotations

import pytest
import yaml

from gateway.config.providers import Price, parse_table
from gateway.config.settings import Settings
from gateway.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "store"),
    [
        ("", None),
        ("off", None),
        ("/var/lib/gateway/usage.db", "/var/lib/gateway/usage.db"),
        ("usage.db", "usage.db"),
        ("sqlite:///var/lib/u.db", "sqlite:///var/lib/u.db"),
        ("postgresql://gw:pw@db:5432/gw", "postgresql://gw:pw@db:5432/gw"),
        ("postgres://db/gw", "postgres://db/gw"),
    ],
)
def test_the_store_setting(value: str, store: str | None) -> None:
    assert Settings.from_env({"USAGE_STORE": value}).usage_store == store


def test_usage_settings_and_their_defaults() -> None:
    default = Settings.from_env({})
    assert (default.usage_store, default.usage_retention, default.usage_queue_size) == (None, 30 * 86400, 10_000)
    assert (default.usage_batch_size, default.usage_flush_interval) == (500, 1.0)
    assert (default.usage_api_enable, default.usage_store_bodies) == (False, False)
    env = {
        "USAGE_RETENTION": "7d12h",
        "USAGE_QUEUE_SIZE": "100",
        "USAGE_BATCH_SIZE": "10",
        "USAGE_FLUSH_INTERVAL": "250ms",
        "USAGE_API_ENABLE": "true",
        "USAGE_STORE_BODIES": "yes",
    }
    read = Settings.from_env(env)
    assert (read.usage_retention, read.usage_queue_size, read.usage_batch_size) == (7.5 * 86400, 100, 10)
    assert (read.usage_flush_interval, read.usage_api_enable, read.usage_store_bodies) == (0.25, True, True)
    assert Settings.from_env({"USAGE_RETENTION": "0"}).usage_retention == 0


def test_a_postgresql_url_is_never_shown_by_the_settings() -> None:
    assert "hunter2" not in repr(Settings.from_env({"USAGE_STORE": "postgresql://gw:hunter2@db/gw"}))


def test_bad_usage_settings_are_reported_together_without_the_url() -> None:
    env = {
        "USAGE_STORE": "mysql://root:hunter2@db/gw",
        "USAGE_QUEUE_SIZE": "0",
        "USAGE_FLUSH_INTERVAL": "0",
        "USAGE_RETENTION": "a month",
    }
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert refused.value.problems == [
        "USAGE_STORE: mysql:// is not a store (use a file path, sqlite:///path or postgresql://)",
        "USAGE_RETENTION: not a duration: 'a month' (use e.g. 30s, 1m30s, 500ms)",
        "USAGE_QUEUE_SIZE: 0 is below the minimum 1",
        "USAGE_FLUSH_INTERVAL: must be above zero",
    ]
    with pytest.raises(ConfigError, match="sqlite:// needs a file path"):
        Settings.from_env({"USAGE_STORE": "sqlite://"})


TABLE = {
    "providers": {
        "a": {
            "id": "a",
            "url": "http://127.0.0.1:1/v1",
            "auth_type": "none",
            "aliases": ["alpha"],
            "endpoints": {"chat": {"name": "chat_completions", "method": "POST", "endpoint": "/chat/completions"}},
            "prices": {"m1": {"input": 1, "output": 2}, "m2": {"input": 3, "output": 4, "cached_input": 0.5}},
        },
        "b": {
            "id": "b",
            "url": "http://127.0.0.1:2/v1",
            "auth_type": "none",
            "endpoints": {"chat": {"name": "chat_completions", "method": "POST", "endpoint": "/chat/completions"}},
        },
    },
    "models": {
        "g": {
            "deployments": [
                {"provider": "alpha", "model": "m1", "input_price": 10, "output_price": 20},
                {"provider": "b", "model": "x", "input_price": 5, "output_price": 6, "cached_input_price": 1},
                {"provider": "b", "model": "only-input", "input_price": 5},
            ]
        }
    },
}


def test_prices_from_providers_and_deployments() -> None:
    table = parse_table(yaml.safe_dump(TABLE), {})
    assert table.prices("a", "m2") == Price(3.0, 4.0, 0.5)
    # The deployment names its provider by an alias; its prices win for that provider and model.
    assert table.prices("a", "m1") == Price(10.0, 20.0)
    assert table.prices("b", "x") == Price(5.0, 6.0, 1.0)
    assert table.prices("b", "only-input") is None  # an input price alone prices nothing
    assert table.prices("b", "m1") is None
    assert table.prices("a", "unknown") is None


@pytest.mark.parametrize(
    ("price", "tokens", "cost"),
    [
        (Price(1.0, 2.0), (1000, 500, 0), 0.002),
        (Price(3.0, 4.0, 0.5), (1000, 0, 400), (600 * 3 + 400 * 0.5) / 1e6),
        (Price(3.0, 4.0), (1000, 0, 400), 0.003),  # no cached price: cached tokens at the input price
        (Price(3.0, 4.0, 0.5), (100, 0, 400), 100 * 0.5 / 1e6),  # never more cached than input
    ],
)
def test_cost(price: Price, tokens: tuple[int, int, int], cost: float) -> None:
    assert price.cost(*tokens) == pytest.approx(cost)


def test_a_price_needs_input_and_output() -> None:
    bad = yaml.safe_load(yaml.safe_dump(TABLE))
    bad["providers"]["a"]["prices"]["m1"] = {"input": 1}
    with pytest.raises(ConfigError, match=r"providers\.a\.prices\.m1: 'output' is a required property"):
        parse_table(yaml.safe_dump(bad), {})
