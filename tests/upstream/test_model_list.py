"""/v1/models: every declared list shape mapped to OpenAI's, aggregated, filtered, tolerant of failures."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.fakes.providers import answering
from tests.fakes.tables import entry

OPENAI_LIST = {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1700, "owned_by": "system"}]}
ANTHROPIC_LIST = {
    "data": [{"type": "model", "id": "claude-x", "display_name": "Claude X", "created_at": "2025-02-19T00:00:00Z"}],
    "has_more": False,
}
COHERE_LIST = {"models": [{"name": "command-r", "endpoints": ["chat"]}], "next_page_token": None}
CLOUDFLARE_LIST = {"result": [{"id": "f3a1", "name": "@cf/meta/llama-3-8b", "created_at": "2024-04-01 10:00:00"}]}
GOOGLE_LIST = {"object": "list", "data": [{"id": "models/gemini-2.0-flash", "object": "model", "owned_by": "google"}]}
OLLAMA_NATIVE = {"models": [{"name": "llama3:latest", "model": "llama3:latest", "modified_at": "2024-05-01T00:00:00Z"}]}

# What a chat-only provider's models carry: the table infers their service type from its endpoints.
LLM = {"service_type": "llm", "input_modalities": ["text"], "output_modalities": ["text"]}

SHAPES = [
    ("openai", OPENAI_LIST, {}, {"id": "openai/gpt-4o", "created": 1700, "owned_by": "system"}),
    (
        "anthropic",
        ANTHROPIC_LIST,
        {"models_list": {"items": "data", "id": "id", "created": "created_at", "owned_by": None}},
        {"id": "anthropic/claude-x", "created": 1739923200, "owned_by": "anthropic"},
    ),
    (
        "cohere",
        COHERE_LIST,
        {"models_list": {"items": "models", "id": "name", "created": None, "owned_by": None}},
        {"id": "cohere/command-r", "created": 0, "owned_by": "cohere"},
    ),
    (
        "cloudflare",
        CLOUDFLARE_LIST,
        {"models_list": {"items": "result", "id": "name", "created": "created_at", "owned_by": None}},
        {"id": "cloudflare/@cf/meta/llama-3-8b", "created": 1711965600, "owned_by": "cloudflare"},
    ),
    (
        "google",
        GOOGLE_LIST,
        {"models_list": {"strip_id_prefix": "models/"}},
        {"id": "google/gemini-2.0-flash", "created": 0, "owned_by": "google"},
    ),
    (
        "ollama",
        OLLAMA_NATIVE,
        {"models_list": {"items": "models", "id": "name", "created": "modified_at", "owned_by": None}},
        {"id": "ollama/llama3:latest", "created": 1714521600, "owned_by": "ollama"},
    ),
]


@pytest.mark.parametrize(("pid", "payload", "extra", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_each_list_shape_maps_to_openai(gateway, fake_provider, pid, payload, extra, expected) -> None:
    fake = await fake_provider({"/models": answering(payload)})
    client = await gateway(entry(pid, fake.url, **extra))
    response = await client.get("/v1/models")
    assert response.status == 200
    assert await response.json() == {
        "object": "list",
        "data": [{**expected, "object": "model", "served_by": pid, **LLM}],
    }


async def test_the_list_asks_every_served_provider_with_its_auth(gateway, fake_provider) -> None:
    a = await fake_provider({"/v1/models": answering(OPENAI_LIST)})
    b = await fake_provider({"/models": answering(COHERE_LIST)})
    client = await gateway(
        entry("a", a.url + "/v1", "bearer"),
        entry("b", b.url, "query", models_list={"items": "models", "id": "name"}),
        entry("c", "http://127.0.0.1:9", "bearer"),  # no key: not served, never asked
        env={"A_API_KEY": "ka", "B_API_KEY": "kb"},
    )
    response = await client.get("/v1/models", headers={"Authorization": "Bearer client"})
    ids = [m["id"] for m in (await response.json())["data"]]
    assert ids == ["a/gpt-4o", "b/command-r"]
    assert a.last.headers["Authorization"] == "Bearer ka"
    assert b.last.query == {"key": "kb"} and "Authorization" not in b.last.headers


async def test_one_failing_or_slow_provider_never_fails_the_list(gateway, fake_provider, unused_tcp_port) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response(OPENAI_LIST)

    good = await fake_provider({"/models": answering(OPENAI_LIST)})
    broken = await fake_provider({"/models": answering({"error": "boom"}, status=500)})
    garbage = await fake_provider({"/models": answering({"unexpected": True})})
    stalled = await fake_provider({"/models": slow})
    client = await gateway(
        entry("good", good.url),
        entry("broken", broken.url),
        entry("garbage", garbage.url),
        entry("stalled", stalled.url),
        entry("down", f"http://127.0.0.1:{unused_tcp_port}"),
        env={"CLIENT_RESPONSE_HEADER_TIMEOUT": "300ms"},
    )
    response = await client.get("/v1/models")
    assert response.status == 200
    assert [m["id"] for m in (await response.json())["data"]] == ["good/gpt-4o"]


async def test_one_provider_is_listed_with_its_name(gateway, fake_provider) -> None:
    fake = await fake_provider({"/models": answering(OPENAI_LIST)})
    other = await fake_provider()
    client = await gateway(entry("openai", fake.url, aliases=["oai"]), entry("other", other.url))
    response = await client.get("/v1/models?provider=oai")
    assert await response.json() == {
        "provider": "openai",
        "object": "list",
        "data": [
            {
                "id": "openai/gpt-4o",
                "object": "model",
                "created": 1700,
                "owned_by": "system",
                "served_by": "openai",
                **LLM,
            }
        ],
    }
    assert other.requests == []


async def test_listing_one_provider_passes_its_error_through(gateway, fake_provider) -> None:
    fake = await fake_provider({"/models": answering({"error": {"message": "bad key"}}, status=401)})
    client = await gateway(entry("openai", fake.url))
    response = await client.get("/v1/models?provider=openai")
    assert response.status == 401
    assert await response.json() == {"error": {"message": "bad key"}}


async def test_listing_an_unknown_or_unconfigured_provider(gateway, fake_provider) -> None:
    client = await gateway(entry("openai", (await fake_provider()).url, "bearer"))
    unknown = await client.get("/v1/models?provider=nope")
    assert unknown.status == 404 and (await unknown.json())["error"]["type"] == "no_provider"
    unconfigured = await client.get("/v1/models?provider=openai")
    assert unconfigured.status == 503 and "OPENAI_API_KEY" in (await unconfigured.json())["error"]["message"]


async def test_the_filters_apply_to_the_list(gateway, fake_provider) -> None:
    payload = {"data": [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}, {"id": "o1"}]}
    fake = await fake_provider({"/models": answering(payload)})
    client = await gateway(entry("openai", fake.url), env={"DISALLOWED_MODELS": "openai/gpt-4o-mini,O1"})
    ids = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert ids == ["openai/gpt-4o"]
    client = await gateway(entry("openai", fake.url), env={"ALLOWED_MODELS": "gpt-4o-*"})
    ids = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert ids == ["openai/gpt-4o-mini"]


async def test_failed_lists_are_counted_by_provider_and_kind(gateway, fake_provider, unused_tcp_port) -> None:
    from tests.fakes.telemetry import Samples, scrape

    good = await fake_provider({"/models": answering(OPENAI_LIST)})
    broken = await fake_provider({"/models": answering({"error": "boom"}, status=500)})
    garbage = await fake_provider({"/models": answering({"unexpected": True})})
    client = await gateway(
        entry("good", good.url),
        entry("broken", broken.url),
        entry("garbage", garbage.url),
        entry("down", f"http://127.0.0.1:{unused_tcp_port}"),
        env={"TELEMETRY_ENABLE": "true", "TELEMETRY_METRICS_PORT": "0", "SERVER_HOST": "127.0.0.1"},
    )
    assert (await client.get("/v1/models")).status == 200
    assert (await client.get("/v1/models?provider=broken")).status == 500
    samples = Samples.parse(await scrape(client.app))
    errors = {tuple(labels.values()): value for labels, value in samples.matching("llmgw_upstream_errors_total")}
    assert errors == {("broken", "status"): 2, ("garbage", "invalid"): 1, ("down", "connect"): 1}
