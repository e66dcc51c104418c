"""Every error on the Inference API's routes is its envelope, `{"success": false, "error": {"code", "message"}}`,
with the documented code for its status: the gateway's own refusals (bad input, auth, limits, routing), unknown
paths under its prefix, and the provider's errors, which keep the provider's message but never its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fakes.access import write_keys
from tests.fakes.gateways import SHORT, TINY, auth_settings, start_gateway
from tests.fakes.net import free_port
from tests.fakes.providers import SurfacesProvider, start_provider
from tests.fakes.tables import PROVIDER_KEY, shipped_table

API = "/api/v1/inference"
HI = [{"role": "user", "content": "hi"}]


async def envelope(response: Any) -> tuple[int, str, str]:
    """(status, code, message) of an error envelope, after checking it is exactly one."""
    assert response.headers["Content-Type"].startswith("application/json")
    body = orjson.loads(await response.read())
    assert set(body) == {"success", "error"} and body["success"] is False
    assert set(body["error"]) == {"code", "message"}
    return response.status, body["error"]["code"], body["error"]["message"]


@pytest.fixture
async def client(aiohttp_client: Any, aiohttp_server: Any) -> Any:
    openai = await SurfacesProvider().start(aiohttp_server)
    anthropic = await SurfacesProvider().start(aiohttp_server)
    table = shipped_table({"openai": f"{openai.url}/v1", "anthropic": f"{anthropic.url}/v1"})
    return (await start_gateway(aiohttp_client, table, SHORT, max_request_body_size=2048)).client


async def test_the_seeds_own_example_of_an_error(client: Any) -> None:
    response = await client.post(f"{API}/chat", json={"messages": HI})
    assert response.status == 400
    assert await response.read() == b'{"success":false,"error":{"code":"BAD_REQUEST","message":"model is required"}}'


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/chat", b"{not json", (400, "BAD_REQUEST", "the request body is not valid JSON")),
        ("/chat", b"[]", (400, "BAD_REQUEST", "the request body must be a JSON object")),
        ("/chat", {"model": "gpt-4o"}, (400, "BAD_REQUEST", "messages is required and must be a non-empty array")),
        (
            "/chat",
            {"model": "gpt-4o", "messages": HI, "max_tokens": 5},
            (400, "BAD_REQUEST", "unknown field 'max_tokens'"),
        ),
        (
            "/chat",
            {"model": "gpt-4o", "messages": HI, "maxTokens": 0},
            (400, "BAD_REQUEST", "maxTokens must be a positive integer"),
        ),
        (
            "/chat",
            {"model": "gpt-4o", "messages": HI, "stream": True},
            (400, "BAD_REQUEST", "stream must be false here (or left out); use /chat/stream"),
        ),
        (
            "/chat",
            {"model": "gpt-4o", "messages": [{"role": {}, "content": "x"}]},
            (400, "BAD_REQUEST", "messages[0].role must be one of"),
        ),
        (
            "/chat",
            {"model": "gpt-4o", "messages": HI, "toolChoice": {"x": 1}},
            (400, "BAD_REQUEST", "toolChoice must be"),
        ),
        ("/embed", {"model": "text-embedding-3-small"}, (400, "BAD_REQUEST", "input is required")),
        ("/images", {"model": "gpt-image-1"}, (400, "BAD_REQUEST", "prompt is required")),
        ("/chat", {"model": "llama-3", "messages": HI}, (404, "NOT_FOUND", "no provider serves model 'llama-3'")),
        (
            "/chat",
            {"model": "gpt-4o", "messages": HI, "provider": "nope"},
            (404, "NOT_FOUND", "unknown provider 'nope'"),
        ),
        (
            "/images",
            {"model": "claude-3", "prompt": "p"},
            (404, "NOT_FOUND", "provider 'anthropic' does not serve images_generations"),
        ),
        (
            "/chat",
            {"model": "gemini-2.0-flash", "messages": HI},
            (503, "SERVICE_UNAVAILABLE", "provider 'google' is not configured: missing API key: set GOOGLE_API_KEY"),
        ),
        (
            "/chat",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 3000}]},
            (413, "PAYLOAD_TOO_LARGE", "request body"),
        ),
    ],
)
async def test_the_gateways_refusals(client: Any, path: str, body: Any, expected: tuple[int, str, str]) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post(API + path, data=data, headers={"Content-Type": "application/json"})
    status, code, message = await envelope(response)
    assert (status, code) == expected[:2]
    assert message.startswith(expected[2]), message


async def test_unknown_paths_and_methods_under_the_prefix_are_envelopes_too(client: Any) -> None:
    status, code, message = await envelope(await client.get(f"{API}/nothing-here"))
    assert (status, code) == (404, "NOT_FOUND")
    assert message.startswith("Invalid URL (GET /api/v1/inference/nothing-here)")
    response = await client.get(f"{API}/chat")
    assert (await envelope(response))[:2] == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "POST"
    # Outside the prefix, OpenAI's envelope as before.
    assert "error" in orjson.loads(await (await client.get("/v1/nothing-here")).read())


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai/fail", (502, "UPSTREAM_ERROR", "provider 'openai' answered 500: boom")),
        # The provider refused the gateway's own key: not the client's fault, and its message may quote the key.
        ("openai/unauth", (502, "UPSTREAM_ERROR", "provider 'openai' answered 401")),
        ("openai/slow", (504, "UPSTREAM_TIMEOUT", "the provider did not answer within 0.3s")),
    ],
)
@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_provider_failures(client: Any, path: str, model: str, expected: tuple[int, str, str]) -> None:
    status, code, message = await envelope(await client.post(API + path, json={"model": model, "messages": HI}))
    assert (status, code, message) == expected


async def test_an_unreachable_provider(aiohttp_client: Any) -> None:
    table = shipped_table({"openai": f"http://127.0.0.1:{free_port()}/v1"})
    gateway = await start_gateway(aiohttp_client, table, TINY)
    response = await gateway.client.post(f"{API}/chat", json={"model": "gpt-4o", "messages": HI})
    status, code, message = await envelope(response)
    assert (status, code) == (502, "UPSTREAM_ERROR")
    assert message == "the provider could not be reached: cannot connect (Connection refused)"


def _provider_error(status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(payload, bytes):
            return web.Response(status=status, body=payload, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        # What the provider says of the request keeps its status; its message, without the gateway's key.
        (
            400,
            {"error": {"message": f"bad temperature for key {PROVIDER_KEY}", "type": "invalid_request_error"}},
            (400, "BAD_REQUEST", "provider 'openai' answered 400: bad temperature for key [REDACTED]"),
        ),
        (
            404,
            {"error": {"message": "The model `gpt-9` does not exist"}},
            (404, "NOT_FOUND", "provider 'openai' answered 404: The model `gpt-9` does not exist"),
        ),
        (
            429,
            {"error": {"message": "Rate limit reached"}},
            (429, "RATE_LIMITED", "provider 'openai' answered 429: Rate limit reached"),
        ),
        (
            403,
            {"error": "your organisation cannot use this model"},
            (502, "UPSTREAM_ERROR", "provider 'openai' answered 403: your organisation cannot use this model"),
        ),
        (
            400,
            [{"error": {"code": 400, "message": "Google's list of errors", "status": "INVALID_ARGUMENT"}}],
            (400, "BAD_REQUEST", "provider 'openai' answered 400: Google's list of errors"),
        ),
        (
            503,
            b"<html><body>Service Unavailable</body></html>",
            (502, "UPSTREAM_ERROR", "provider 'openai' answered 503"),
        ),
        (
            500,
            b"upstream connect error",
            (502, "UPSTREAM_ERROR", "provider 'openai' answered 500: upstream connect error"),
        ),
        (200, b"not json", (502, "UPSTREAM_ERROR", "provider 'openai': the provider's answer is not JSON")),
        (
            200,
            {"object": "chat.completion"},
            (502, "UPSTREAM_ERROR", "provider 'openai': the provider's chat answer has no choices"),
        ),
    ],
)
async def test_provider_errors_become_envelopes(
    aiohttp_client: Any, aiohttp_server: Any, status: int, payload: Any, expected: tuple[int, str, str]
) -> None:
    headers = {"Retry-After": "7"} if status == 429 else None
    provider = await start_provider(
        aiohttp_server, routes={"/v1/chat/completions": _provider_error(status, payload, headers)}
    )
    gateway = await start_gateway(aiohttp_client, shipped_table({"openai": f"{provider.url}/v1"}), TINY)
    response = await gateway.client.post(f"{API}/chat", json={"model": "gpt-4o", "messages": HI})
    assert await envelope(response) == expected
    if status == 429:
        assert response.headers["Retry-After"] == "7"
    (exchange,) = await gateway.settled()
    assert exchange.upstream_status == status


async def test_an_error_event_mid_stream_becomes_an_error_event(aiohttp_client: Any, aiohttp_server: Any) -> None:
    async def erring(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
        await response.write(b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, routes={"/v1/chat/completions": erring})
    gateway = await start_gateway(aiohttp_client, shipped_table({"openai": f"{provider.url}/v1"}), TINY)
    response = await gateway.client.post(f"{API}/chat/stream", json={"model": "gpt-4o", "messages": HI})
    assert response.status == 200
    assert await response.read() == (
        b'data: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n'
        b'data: {"type":"error","error":{"code":"UPSTREAM_ERROR","message":"overloaded"}}\n\n'
        b'data: {"type":"message_stop","finishReason":null,"usage":null}\n\n'
    )


async def test_auth_refusals(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    provider = await SurfacesProvider().start(aiohttp_server)
    keys = write_keys(
        tmp_path,
        {"full": {}, "free": {"policy": "free"}, "narrow": {"policy": "narrow"}, "rpm": {"policy": "rpm"}},
        {"free": {"inference": False}, "narrow": {"models": ["openai/gpt-4o"]}, "rpm": {"requests_per_minute": 1}},
    )
    table = shipped_table({"openai": f"{provider.url}/v1"})
    gateway = await start_gateway(aiohttp_client, table, auth_settings(auth_keys_file=str(keys.path)))

    async def chat(key: str | None, model: str = "gpt-4o") -> Any:
        headers = {} if key is None else {"Authorization": f"Bearer {keys.key(key)}"}
        return await gateway.client.post(f"{API}/chat", json={"model": model, "messages": HI}, headers=headers)

    refused = await chat(None)
    assert (await envelope(refused))[:2] == (401, "UNAUTHORIZED")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await envelope(await chat("free")))[:2] == (402, "PAYMENT_REQUIRED")
    assert (await envelope(await chat("narrow", "gpt-4o-mini")))[:2] == (403, "FORBIDDEN")
    assert (await chat("rpm")).status == 200
    limited = await chat("rpm")
    assert (await envelope(limited))[:2] == (429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) > 0
    # The client's own key never reaches the provider.
    assert (await chat("full")).status == 200
    assert provider.last.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
