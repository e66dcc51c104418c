"""The route table and the provider table's endpoints: a new endpoint is one provider-table entry plus one
route-table row; errors come in each route's dialect; an operation a provider does not declare is refused; model
groups reach their first deployment."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.api.routes import ROUTES, ApiRoute, model_route
from gateway.app import create_app
from gateway.config.settings import Settings
from gateway.dialects import openai
from gateway.telemetry.metrics import METRICS
from tests.fakes.tables import entry, table_of
from tests.fakes.telemetry import samples

WIDGETS = "/v1/widgets"


def with_widgets(url: str, **extra: Any) -> dict[str, Any]:
    provider = entry("acme", url, **extra)
    # The one table entry: the provider declares the made-up operation, its method and path.
    provider["endpoints"]["widgets"] = {"name": "make_widgets", "method": "POST", "endpoint": "/widgets/make"}
    return provider


# The one route-table row.
WIDGET_ROUTES: tuple[ApiRoute, ...] = (*ROUTES, model_route(WIDGETS, "widgets", openai.parse_model_request))


async def test_a_made_up_endpoint_is_one_table_entry_and_one_route_row(aiohttp_client, fake_provider) -> None:
    fake = await fake_provider({"/widgets/make": _widgets})
    settings = Settings.from_env({"TELEMETRY_ENABLE": "true", "TELEMETRY_METRICS_PORT": "0"})
    table = table_of(with_widgets(fake.url), entry("plain", fake.url))
    client = await aiohttp_client(create_app(settings, table, WIDGET_ROUTES))
    raw = b'{"model": "acme/w-1", "count": 2}'
    response = await client.post(WIDGETS, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert await response.json() == {"widgets": 2}
    # Routed by model like chat: the prefix named the provider, the provider got its own model name.
    assert (fake.last.method, fake.last.path) == ("POST", "/widgets/make")
    assert orjson.loads(fake.last.body) == {"model": "w-1", "count": 2}
    # A provider that does not declare the operation: 404 naming what it serves, in the route's dialect.
    refused = await client.post(WIDGETS, json={"model": "plain/w-1"})
    assert refused.status == 404
    assert await refused.json() == {
        "error": {
            "message": "provider 'plain' does not serve widgets; it serves: chat, models",
            "type": "no_provider",
            "code": "no_provider",
        }
    }
    assert len(fake.requests) == 1
    # The route table's operation names the GenAI series.
    metrics = await samples(client.app)
    labels = {"gen_ai_operation_name": "widgets", "gen_ai_provider_name": "acme", "gen_ai_request_model": "other"}
    assert metrics.value("gen_ai_server_request_duration_seconds_count", **labels, error_type="") == 1
    assert client.app[METRICS].genai_operations == frozenset(r.operation for r in WIDGET_ROUTES if r.inference)
    assert "widgets" in client.app[METRICS].genai_operations


async def _widgets(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"widgets": body["count"]})


async def test_errors_come_in_the_dialect_of_the_route(aiohttp_client, fake_provider) -> None:
    fake = await fake_provider()
    client = await aiohttp_client(create_app(Settings.from_env({}), table_of(entry("acme", fake.url)), ROUTES))
    missing = await client.post(
        "/v1/messages", json={"model": "nobody-serves-this", "max_tokens": 5, "messages": [{"role": "user"}]}
    )
    assert missing.status == 404
    assert await missing.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no provider serves model 'nobody-serves-this': name one with a provider/model id "
            "(e.g. openai/gpt-4o), the ?provider= query or a provider field",
        },
    }
    bad = await client.post("/v1/messages", data=b"{", headers={"Content-Type": "application/json"})
    assert bad.status == 400 and (await bad.json())["error"]["type"] == "invalid_request_error"
    assert (await bad.json())["type"] == "error"
    wrong_method = await client.get("/v1/messages")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"] == {
        "type": "invalid_request_error",
        "message": "Method GET not allowed for /v1/messages",
    }
    # The same failure on an OpenAI route keeps OpenAI's envelope.
    openai_missing = await client.post("/v1/chat/completions", json={"model": "nobody", "messages": [{}]})
    assert set((await openai_missing.json())["error"]) == {"message", "type", "code"}
    assert fake.requests == []


async def test_a_model_group_is_served_by_its_first_deployment(aiohttp_client, fake_provider) -> None:
    first, second = await fake_provider(), await fake_provider()
    text = (
        "providers:\n"
        f"  one: {orjson.dumps(entry('one', first.url)).decode()}\n"
        f"  two: {orjson.dumps(entry('two', second.url)).decode()}\n"
        "models:\n"
        "  llama-3.3-70b:\n"
        "    deployments:\n"
        "      - {provider: two, model: llama-3.3-70b-versatile}\n"
        "      - {provider: one, model: llama3.3:70b}\n"
    )
    from gateway.config.providers import parse_table

    client = await aiohttp_client(create_app(Settings.from_env({}), parse_table(text, {})))
    response = await client.post(
        "/v1/chat/completions", json={"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status == 200
    assert first.requests == []
    assert orjson.loads(second.last.body)["model"] == "llama-3.3-70b-versatile"
