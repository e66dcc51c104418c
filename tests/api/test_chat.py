"""End to end: client -> gateway app -> fake provider on 127.0.0.1, asserting what crosses each wire."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.bodies import CHAT, chat, chat_answer
from tests.fakes.tables import entry

# --- outbound auth: each style's exact header or parameter -------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "extra", "header", "value", "query"),
    [
        ("bearer", {}, "Authorization", "Bearer sk-up", {}),
        ("xheader", {}, "x-api-key", "sk-up", {}),
        ("xheader", {"auth_header": "x-goog-api-key"}, "x-goog-api-key", "sk-up", {}),
        ("query", {}, None, None, {"key": "sk-up"}),
        ("query", {"auth_query": "api_key"}, None, None, {"api_key": "sk-up"}),
        ("none", {}, None, None, {}),
    ],
)
async def test_each_auth_style_sends_exactly_its_credential(
    fake_provider, gateway, auth, extra, header, value, query
) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url, auth, **extra), env={"P_API_KEY": "sk-up"})
    response = await client.post(
        CHAT,
        json=chat("p/m"),
        headers={"Authorization": "Bearer client-secret", "X-API-Key": "client-key", "Cookie": "s=1"},
    )
    assert response.status == 200
    seen = fake.last
    assert seen.query == query
    sent = {k.lower(): v for k, v in seen.headers.items()}
    credential_headers = {"authorization", "x-api-key", "x-goog-api-key", "cookie"}
    expected = {header.lower(): value} if header else {}
    assert {k: v for k, v in sent.items() if k in credential_headers} == expected
    assert "client-secret" not in json.dumps(seen.headers) and "client-key" not in json.dumps(seen.headers)


async def test_static_headers_from_the_table_are_sent(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(
        entry("anthropic", fake.url, "xheader", headers={"anthropic-version": "2023-06-01"}),
        env={"ANTHROPIC_API_KEY": "k"},
    )
    assert (await client.post(CHAT, json=chat("anthropic/claude-x"))).status == 200
    assert fake.last.headers["anthropic-version"] == "2023-06-01"


async def test_hop_by_hop_and_forwarding_headers_stay_behind(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url))
    headers = {
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic abc",
        "X-Forwarded-For": "10.0.0.1",
        "X-Custom": "not on the allow-list",
    }
    assert (await client.post(CHAT, json=chat("p/m"), headers=headers)).status == 200
    sent = {k.lower() for k in fake.last.headers}
    assert not sent & {"x-secret-hop", "keep-alive", "proxy-authorization", "x-forwarded-for", "x-custom"}
    assert fake.last.headers["Accept-Encoding"] == "identity"


IDENTITY_AND_BILLING = {
    "OpenAI-Organization": "org-operator-pays",
    "OpenAI-Project": "proj-1",
    "X-Forwarded-Prefix": "/p",
    "X-Forwarded-Client-Cert": "Hash=1",
    "True-Client-IP": "10.0.0.2",
    "X-Client-IP": "10.0.0.3",
    "CF-Connecting-IP": "10.0.0.4",
    "Via": "1.1 lb",
    "X-Original-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
}
ALLOWED = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "OpenAI/Python 2.0",
    "Idempotency-Key": "k-1",
    "OpenAI-Beta": "assistants=v2",
    "Anthropic-Version": "2023-06-01",
    "Anthropic-Beta": "tools-2024",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


async def test_inference_routes_forward_an_allow_list_and_proxy_never_identity_or_billing(
    fake_provider, gateway
) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url))
    headers = {**ALLOWED, **IDENTITY_AND_BILLING, "X-Stainless-OS": "Linux"}
    assert (await client.post(CHAT, json=chat("p/m"), headers=headers)).status == 200
    sent = {k.lower(): v for k, v in fake.last.headers.items()}
    assert {k.lower(): v for k, v in ALLOWED.items()}.items() <= sent.items()
    assert not {k.lower() for k in IDENTITY_AND_BILLING} & set(sent)
    assert "x-stainless-os" not in sent
    # /proxy keeps a wider pass (any end-to-end header), but never identity or billing headers.
    assert (await client.post("/proxy/p/files", data=b"{}", headers={**headers, "X-Custom": "1"})).status == 200
    proxied = {k.lower() for k in fake.last.headers}
    assert {"x-custom", "x-stainless-os", "openai-beta"} <= proxied
    assert not {k.lower() for k in IDENTITY_AND_BILLING} & proxied


async def test_the_table_can_forward_more_client_headers_but_never_credentials(fake_provider, gateway) -> None:
    fake = await fake_provider()
    extra = ["OpenAI-Organization", "X-Custom", "Authorization", "Cookie"]
    client = await gateway(entry("p", fake.url, forward_headers=extra))
    headers = {"OpenAI-Organization": "org-1", "X-Custom": "1", "Cookie": "s=1", "Authorization": "Bearer client"}
    for path in (CHAT, "/proxy/p/chat/completions"):
        assert (await client.post(path, json=chat("p/m"), headers=headers)).status == 200
        sent = {k.lower(): v for k, v in fake.last.headers.items()}
        assert (sent["openai-organization"], sent["x-custom"]) == ("org-1", "1")
        assert "cookie" not in sent and "authorization" not in sent


# --- routing --------------------------------------------------------------------------------------------------


async def routed(fake_provider, gateway, request_body: dict[str, Any], query: str = "") -> tuple[str, str, Any]:
    fakes = {name: await fake_provider() for name in ("openai", "google", "groq")}
    client = await gateway(
        entry("openai", fakes["openai"].url, model_prefixes=["gpt-", "o1"]),
        entry("google", fakes["google"].url, aliases=["gemini", "google-gemini"], model_prefixes=["gemini"]),
        entry("groq", fakes["groq"].url),
    )
    response = await client.post(CHAT + query, json=request_body)
    assert response.status == 200, await response.text()
    (name, fake), *others = [(n, f) for n, f in fakes.items() if f.requests]
    assert not others
    return name, fake.last.body, fake.last


@pytest.mark.parametrize(
    ("request_body", "query", "provider", "model"),
    [
        (chat("openai/gpt-4o"), "", "openai", "gpt-4o"),
        (chat("gpt-4o"), "", "openai", "gpt-4o"),
        (chat("GPT-4o-mini"), "", "openai", "GPT-4o-mini"),
        (chat("gemini-2.0-flash"), "", "google", "gemini-2.0-flash"),
        (chat("o1-preview"), "", "openai", "o1-preview"),
        (chat("gemini-pro", provider="google-gemini"), "", "google", "gemini-pro"),
        (chat("llama-3", provider="groq"), "", "groq", "llama-3"),
        (chat("llama-3"), "?provider=groq", "groq", "llama-3"),
        (chat("gpt-4o", provider="google"), "?provider=groq", "groq", "gpt-4o"),
        (chat("groq/openai/gpt-oss-120b"), "", "groq", "openai/gpt-oss-120b"),
        (chat("openai/gpt-oss-120b"), "?provider=groq", "groq", "openai/gpt-oss-120b"),
        (chat("groq/llama-3"), "?provider=groq", "groq", "llama-3"),
    ],
)
async def test_the_provider_is_chosen_in_order_and_the_prefix_stripped(
    fake_provider, gateway, request_body, query, provider, model
) -> None:
    name, sent, _ = await routed(fake_provider, gateway, request_body, query)
    forwarded = json.loads(sent)
    assert (name, forwarded["model"]) == (provider, model)
    assert "provider" not in forwarded


async def test_an_unchanged_body_is_forwarded_byte_for_byte(fake_provider, gateway) -> None:
    raw = b'{"model":  "gpt-4o", "messages": [{"role":"user","content":"x"}], "temperature": 0.25, "x_extra": [1]}'
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url, model_prefixes=["gpt-"]))
    response = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert fake.last.body == raw


async def test_a_rewritten_body_keeps_every_other_field(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url))
    sent = chat("openai/gpt-4o", temperature=0.25, tools=[{"type": "function"}], metadata={"a": 1}, provider="openai")
    assert (await client.post(CHAT, json=sent)).status == 200
    forwarded = json.loads(fake.last.body)
    expected = {k: v for k, v in sent.items() if k != "provider"} | {"model": "gpt-4o"}
    assert forwarded == expected
    assert list(forwarded) == [k for k in sent if k != "provider"]


async def test_no_match_is_404_no_provider_naming_the_model(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url, model_prefixes=["gpt-"]))
    response = await client.post(CHAT, json=chat("mystery-7b"))
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["type"] == "no_provider" and error["code"] == "no_provider"
    assert "'mystery-7b'" in error["message"]
    response = await client.post(CHAT + "?provider=nope", json=chat("gpt-4o"))
    assert response.status == 404
    assert "'nope'" in (await response.json())["error"]["message"]
    assert fake.requests == []


async def test_a_provider_without_its_key_gets_a_clear_error(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url, "bearer"), env={})
    response = await client.post(CHAT, json=chat("openai/gpt-4o"))
    assert response.status == 503
    error = (await response.json())["error"]
    assert error["code"] == "provider_not_configured"
    assert "OPENAI_API_KEY" in error["message"]
    assert fake.requests == []


# --- filters and vision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "model", "status"),
    [
        ({"ALLOWED_MODELS": "openai/gpt-4o"}, "openai/gpt-4o", 200),
        ({"ALLOWED_MODELS": "GPT-4O"}, "openai/gpt-4o", 200),
        ({"ALLOWED_MODELS": "gpt-4o"}, "openai/gpt-4o-mini", 403),
        ({"ALLOWED_MODELS": "openai/gpt-4*"}, "openai/gpt-4.1", 200),
        ({"ALLOWED_MODELS": "gpt-4o", "DISALLOWED_MODELS": "gpt-4o"}, "openai/gpt-4o", 200),
        ({"DISALLOWED_MODELS": "openai/gpt-4o"}, "openai/gpt-4o", 403),
        ({"DISALLOWED_MODELS": "gpt-4o"}, "openai/GPT-4o", 403),
        ({"DISALLOWED_MODELS": "gpt-4o"}, "openai/gpt-4o-mini", 200),
    ],
)
async def test_allow_and_deny_lists(gateway, fake_provider, env, model, status) -> None:
    fake = await fake_provider()
    client = await gateway(entry("openai", fake.url), env=env)
    response = await client.post(CHAT, json=chat(model))
    assert response.status == status
    if status == 403:
        error = (await response.json())["error"]
        assert (error["type"], error["code"]) == ("permission_error", "model_not_allowed")
        assert fake.requests == []


IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
]


@pytest.mark.parametrize(
    ("enable", "supports", "status", "code"),
    [
        ("false", True, 400, "vision_disabled"),
        ("true", False, 400, "vision_not_supported"),
        ("true", True, 200, None),
    ],
)
async def test_vision_gating(gateway, fake_provider, enable, supports, status, code) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url, supports_vision=supports), env={"ENABLE_VISION": enable})
    response = await client.post(CHAT, json={"model": "p/m", "messages": IMAGE})
    assert response.status == status
    if code:
        assert (await response.json())["error"]["code"] == code
        assert fake.requests == []


async def test_text_only_requests_pass_with_vision_disabled(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url, supports_vision=False))
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert (await client.post(CHAT, json={"model": "p/m", "messages": text_parts})).status == 200


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"text"', "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "invalid_model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_model"),
        (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', "invalid_model"),
        (b'{"model": "p/m"}', "invalid_messages"),
        (b'{"model": "p/m", "messages": "hi"}', "invalid_messages"),
        (b'{"model": "p/m", "messages": ["hi"]}', "invalid_messages"),
        (b'{"model": "p/m", "messages": [{}], "stream": "yes"}', "invalid_stream"),
        (b'{"model": "p/m", "messages": [{}], "provider": 3}', "invalid_provider"),
        (b'{"model": "p/", "messages": [{}]}', "invalid_model"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    ],
)
async def test_malformed_requests_get_400_in_the_openai_envelope(gateway, fake_provider, raw, code) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert response.content_type == "application/json"
    payload = await response.json()
    assert set(payload) == {"error"} and set(payload["error"]) == {"message", "type", "code"}
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["code"] == code
    assert fake.requests == []


async def test_an_oversized_body_gets_413_before_it_is_read(gateway, fake_provider) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url), env={"SERVER_MAX_REQUEST_BODY_SIZE": "1000"})
    response = await client.post(CHAT, data=b"x" * 5000, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"


async def test_unknown_routes_and_methods_get_the_envelope(gateway, fake_provider) -> None:
    client = await gateway(entry("p", (await fake_provider()).url))
    response = await client.post("/v1/unknown")
    assert response.status == 404
    assert (await response.json())["error"] == {
        "message": "Invalid URL (POST /v1/unknown): the gateway does not serve this route; a provider's own API is "
        "reachable as /proxy/{provider}/...",
        "type": "invalid_request_error",
        "code": "unknown_url",
    }
    response = await client.get(CHAT)
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


# --- upstream answers and failures ------------------------------------------------------------------------------


async def test_upstream_errors_pass_through_unchanged(gateway, fake_provider) -> None:
    raw = b'{"error": {"message": "Incorrect API key", "type": "invalid_request_error", "code": "invalid_api_key"}}'

    async def denied(request: web.Request) -> web.Response:
        return web.Response(status=401, body=raw, content_type="application/json", headers={"x-upstream": "1"})

    fake = await fake_provider({"/chat/completions": denied})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat("p/m"))
    assert response.status == 401
    assert await response.read() == raw
    assert response.headers["x-upstream"] == "1"
    assert response.content_type == "application/json"


async def test_a_non_streamed_answer_comes_back_as_sent(gateway, fake_provider) -> None:
    raw = json.dumps(chat_answer(content="exact bytes")).encode()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=raw, content_type="application/json", headers={"openai-processing-ms": "12"})

    fake = await fake_provider({"/chat/completions": answer})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat("p/m"))
    assert response.status == 200
    assert await response.read() == raw
    assert response.headers["Content-Length"] == str(len(raw))
    assert response.headers["openai-processing-ms"] == "12"


async def test_an_unreachable_provider_is_502(gateway, unused_tcp_port) -> None:
    client = await gateway(entry("p", f"http://127.0.0.1:{unused_tcp_port}"))
    response = await client.post(CHAT, json=chat("p/m"))
    assert response.status == 502
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_unreachable")
    assert str(unused_tcp_port) not in error["message"]


async def test_a_provider_that_never_answers_is_504(gateway, fake_provider) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    fake = await fake_provider({"/chat/completions": stall})
    client = await gateway(entry("p", fake.url), env={"CLIENT_TIMEOUT": "200ms"})
    response = await client.post(CHAT, json=chat("p/m"))
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "upstream_timeout"


async def test_health_answers_ok(gateway, fake_provider) -> None:
    client = await gateway(entry("p", (await fake_provider()).url))
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"message": "OK"}


async def test_a_providers_cookie_is_never_sent_on_later_calls(gateway, fake_provider) -> None:
    async def set_cookie(request: web.Request) -> web.Response:
        response = web.json_response(chat_answer())
        response.set_cookie("session", "belongs-to-client-a")
        return response

    fake = await fake_provider({"/chat/completions": set_cookie})
    # A host name, not an address: cookie jars refuse cookies from bare IP addresses.
    client = await gateway(entry("p", fake.url.replace("127.0.0.1", "localhost")))
    first = await client.post(CHAT, json=chat("p/m"))
    assert first.status == 200 and "belongs-to-client-a" in first.headers["Set-Cookie"]
    client.session.cookie_jar.clear()  # the second caller is someone else
    assert (await client.post(CHAT, json=chat("p/m"))).status == 200
    assert "Cookie" not in fake.last.headers
