"""/proxy/{provider}/{path}: raw passthrough with the provider's auth, never leaving its base URL."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from tests.fakes.net import raw_http
from tests.fakes.tables import entry


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_method_path_query_and_body_are_forwarded(gateway, fake_provider, method) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b"raw answer", content_type="text/plain", headers={"X-Echo": "1"})

    fake = await fake_provider({"/v1/files/abc": echo})
    client = await gateway(entry("openai", fake.url + "/v1", "bearer"), env={"OPENAI_API_KEY": "sk-up"})
    data = b'{"purpose": "batch"}' if method in ("POST", "PUT", "PATCH") else None
    response = await client.request(
        method, "/proxy/openai/files/abc?limit=2&order=desc", data=data, headers={"Authorization": "Bearer mine"}
    )
    assert response.status == 201
    assert await response.read() == b"raw answer"
    assert response.headers["X-Echo"] == "1"
    seen = fake.last
    assert (seen.method, seen.path, seen.query) == (method, "/v1/files/abc", {"limit": "2", "order": "desc"})
    assert seen.body == (data or b"")
    assert seen.headers["Authorization"] == "Bearer sk-up"


async def test_the_query_key_replaces_any_the_client_sent(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("google", fake.url, "query"), env={"GOOGLE_API_KEY": "real"})
    response = await client.get("/proxy/google/models?key=forged&pageSize=5&KEY=a&Key=b&key%00=c&%20key=d")
    assert response.status == 200
    # Any spelling another parser could read as the key parameter is dropped: only the provider's own key goes.
    assert fake.last.query == {"pageSize": "5", "key": "real"}


async def test_a_client_cannot_set_the_providers_auth_header(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(
        entry("anthropic", fake.url, "xheader", auth_header="x-goog-api-key"), env={"ANTHROPIC_API_KEY": "real"}
    )
    await client.get("/proxy/anthropic/models", headers={"x-goog-api-key": "forged"})
    assert fake.last.headers["x-goog-api-key"] == "real"


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/openai/../admin",
        "/proxy/openai/models/../../secret",
        "/proxy/openai/%2e%2e/secret",
        "/proxy/openai/%2E%2E%2Fsecret",
        "/proxy/openai/%252e%252e/secret",
        "/proxy/openai/..%5csecret",
        "/proxy/openai//evil.example/x",
        "/proxy/openai/http://evil.example/x",
        "/proxy/openai/https:%2F%2Fevil.example",
        "/proxy/openai/./models",
        "/proxy/openai/..;/admin",
        "/proxy/openai/models/..;x/..;/secret",
        "/proxy/openai/models%0d%0aX-Injected:%201",
    ],
)
async def test_paths_that_could_escape_the_base_url_get_400(gateway, fake_provider, path) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url + "/v1"))
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, body = await raw_http(client.host, client.port, request)
    assert status == 400, path
    assert json.loads(body)["error"]["code"] == "invalid_path"
    assert fake.requests == []


async def test_dots_inside_names_are_fine(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url + "/v1"))
    response = await client.get("/proxy/openai/files/report..v2.json")
    assert response.status == 200
    assert fake.last.path == "/v1/files/report..v2.json"


async def test_unknown_and_unconfigured_providers(gateway, fake_provider) -> None:
    client = await gateway(entry("openai", (await fake_provider()).url, "bearer"))
    response = await client.get("/proxy/nope/models")
    assert response.status == 404 and (await response.json())["error"]["type"] == "no_provider"
    response = await client.get("/proxy/openai/models")
    assert response.status == 503 and "OPENAI_API_KEY" in (await response.json())["error"]["message"]


async def test_other_methods_are_refused(gateway, fake_provider) -> None:
    client = await gateway(entry("openai", (await fake_provider()).url))
    response = await client.request("OPTIONS", "/proxy/openai/models")
    assert response.status == 405


async def test_an_absolute_form_target_is_read_as_its_path(gateway, fake_provider) -> None:
    """A client speaking to the gateway as to a forward proxy sends `GET http://host/proxy/...`: the provider gets
    the same path as for the origin form, not `/v1/proxy/openai/...`."""
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url + "/v1"))
    target = f"http://{client.host}:{client.port}/proxy/openai/models?limit=2"
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, _ = await raw_http(client.host, client.port, request)
    assert status == 200
    assert (fake.last.path, fake.last.query) == ("/v1/models", {"limit": "2"})
