"""Client API keys end to end: a real gateway in front of a real fake provider, with client auth on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.access.auth import ACCESS, reload_keys
from gateway.access.ratelimit import Quota
from gateway.config.providers import parse_table
from gateway.exchange import EXCHANGE
from tests.fakes.access import FakeClock, KeysFile, write_keys
from tests.fakes.bodies import chat
from tests.fakes.gateways import ROOT, auth_settings, gateway_app, gateway_args, running
from tests.fakes.net import free_port, read_until_cut, wait_listening
from tests.fakes.providers import ChatProvider, answering, start_provider
from tests.fakes.tables import PROVIDER_KEY, access_table
from tests.fakes.uploads import content_type, form

Client = TestClient[web.Request, web.Application]

POLICIES = {
    "narrow": {"models": ["fake/alpha-1"]},
    "free": {"inference": False},
    "rpm": {"requests_per_minute": 2},
    "tpm": {"tokens_per_minute": 20},
    "kilo": {"tokens_per_minute": 1000},
}
CLIENTS: dict[str, dict[str, Any]] = {
    "full": {},
    "gone": {"revoked": True},
    "narrow": {"policy": "narrow"},
    "free": {"policy": "free"},
    "rpm": {"policy": "rpm"},
    "tpm": {"policy": "tpm"},
    "kilo": {"policy": "kilo"},
}


@pytest.fixture
def keys(tmp_path: Path) -> KeysFile:
    return write_keys(tmp_path, CLIENTS, POLICIES)


@pytest.fixture
def names() -> list[str | None]:
    return []


@pytest.fixture
async def gw(aiohttp_client: Any, upstream: ChatProvider, keys: KeysFile, clock: FakeClock, names: list[Any]) -> Client:
    app = gateway_app(auth_settings(auth_keys_file=str(keys.path)), access_table(upstream.url), clock)

    @web.middleware
    async def spy(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        # Innermost: sees the record as the handlers (and the metrics, later) do.
        names.append(request[EXCHANGE].client_name)
        return await handler(request)

    app.middlewares.append(spy)
    client: Client = await aiohttp_client(app)
    return client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def envelope(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(await response.read())
    return body


async def test_probes_need_no_credentials(gw: Client) -> None:
    for path, body in (("/health", b'{"message":"OK"}'), ("/ready", b'{"status":"ready"}')):
        response = await gw.get(path)
        assert (response.status, await response.read()) == (200, body)
        assert "WWW-Authenticate" not in response.headers


async def test_missing_credentials_get_401_with_a_challenge(gw: Client, upstream: ChatProvider) -> None:
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/proxy/fake/files")):
        response = await gw.request(method, path, json=chat("fake/alpha-1") if method == "POST" else None)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="llm-gateway"'
        assert await envelope(response) == {
            "error": {
                "message": "missing credentials: send Authorization: Bearer <key> or X-API-Key: <key>",
                "type": "authentication_error",
                "code": "invalid_api_key",
            }
        }
    assert upstream.requests == []


@pytest.mark.parametrize("form", ["bearer", "x-api-key", "both"])
async def test_both_header_forms_are_accepted_and_never_forwarded(
    gw: Client, upstream: ChatProvider, keys: KeysFile, names: list[Any], form: str
) -> None:
    key = keys.key("full")
    headers = {"bearer": bearer(key), "x-api-key": {"X-API-Key": key}, "both": {**bearer(key), "X-API-Key": key}}
    for call in (
        gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers[form]),
        gw.post("/v1/chat/completions", json=chat("fake/alpha-1", stream=True), headers=headers[form]),
        gw.get("/v1/models", headers=headers[form]),
        gw.post("/proxy/fake/embeddings", json={"input": "x"}, headers=headers[form]),
    ):
        response = await call
        assert response.status == 200, await response.read()
        await response.read()
    fake = upstream
    assert len(fake.requests) == 4
    for raw in [seen.raw_headers for seen in fake.requests]:
        values = b"\n".join(name + b": " + value for name, value in raw)
        # The client's key went nowhere; the provider's own key replaced it.
        assert key.encode() not in values
        assert b"x-api-key" not in values.lower()
    assert {seen.headers["Authorization"] for seen in fake.requests} == {f"Bearer {PROVIDER_KEY}"}
    assert names == ["full"] * 4


async def test_wrong_and_revoked_keys_get_401(gw: Client, upstream: ChatProvider, keys: KeysFile) -> None:
    wrong = keys.key("full")[:-2] + ("AA" if not keys.key("full").endswith("AA") else "BB")
    cases = [
        (bearer(wrong), "invalid API key"),
        ({"X-API-Key": "sk-something-else"}, "invalid API key"),
        (bearer(keys.key("gone")), "this API key has been revoked"),
        ({"Authorization": f"Basic {keys.key('full')}"}, "the Authorization header must be Bearer <key>"),
        ({"Authorization": "Bearer "}, "the Authorization header must be Bearer <key>"),
        (
            {**bearer(keys.key("full")), "X-API-Key": keys.key("narrow")},
            "Authorization and X-API-Key carry different credentials",
        ),
    ]
    for headers, message in cases:
        response = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="llm-gateway", error="invalid_token"'
        body = await response.read()
        assert orjson.loads(body)["error"] == {
            "message": message,
            "type": "authentication_error",
            "code": "invalid_api_key",
        }
        for value in headers.values():
            if len(value) > 10:
                assert value.split()[-1].encode() not in body  # a credential is never echoed
    assert upstream.requests == []


async def test_policy_limits_models_the_list_and_the_proxy(gw: Client, upstream: ChatProvider, keys: KeysFile) -> None:
    headers = bearer(keys.key("narrow"))
    allowed = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert allowed.status == 200
    refused = await gw.post("/v1/chat/completions", json=chat("alpha-2"), headers=headers)
    assert refused.status == 403
    assert await envelope(refused) == {
        "error": {
            "message": "model 'fake/alpha-2' is not allowed for this client",
            "type": "permission_error",
            "code": "model_not_allowed",
        }
    }
    listed = await envelope(await gw.get("/v1/models", headers=headers))
    assert [m["id"] for m in listed["data"]] == ["fake/alpha-1"]
    one = await envelope(await gw.get("/v1/models?provider=fake", headers=headers))
    assert [m["id"] for m in one["data"]] == ["fake/alpha-1"]
    everything = await envelope(await gw.get("/v1/models", headers=bearer(keys.key("full"))))
    assert [m["id"] for m in everything["data"]] == ["fake/alpha-1", "fake/alpha-2", "fake/beta-1"]
    proxied = await gw.post("/proxy/fake/embeddings", json={"model": "alpha-2"}, headers=headers)
    assert proxied.status == 403
    assert (await envelope(proxied))["error"]["code"] == "proxy_not_allowed"
    # One chat and three lists reached the provider; the refused calls did not.
    assert len(upstream.requests) == 4


async def test_a_client_not_entitled_to_inference_gets_402_before_routing(
    gw: Client, upstream: ChatProvider, keys: KeysFile
) -> None:
    headers = {"X-API-Key": keys.key("free")}
    for call in (
        gw.post("/v1/chat/completions", json=chat("no-such-model"), headers=headers),
        gw.post("/v1/chat/completions", data=b"not json", headers=headers),
        gw.post("/proxy/fake/embeddings", json={}, headers=headers),
    ):
        response = await call
        assert response.status == 402
        assert await envelope(response) == {
            "error": {
                "message": "paid account required: this client is not entitled to inference",
                "type": "insufficient_quota",
                "code": "paid_account_required",
            }
        }
    assert upstream.requests == []
    listing = await gw.get("/v1/models", headers=headers)
    assert listing.status == 200


async def test_request_limit_429_with_headers_then_recovery(
    gw: Client, keys: KeysFile, clock: FakeClock, upstream: ChatProvider
) -> None:
    headers = bearer(keys.key("rpm"))
    first = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert first.status == 200
    # The client's own figures, not the provider's (which said 10000).
    assert {k: v for k, v in first.headers.items() if k.lower().startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
    }
    second = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1", stream=True), headers=headers)
    assert second.status == 200 and second.headers["Content-Type"] == "text/event-stream"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] == "1m0s"
    await second.read()
    third = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert third.status == 429
    assert third.headers["Retry-After"] == "30"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert await envelope(third) == {
        "error": {
            "message": "rate limit reached: the limit of 2 requests per minute is spent; retry in 30s",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    assert len(upstream.requests) == 2
    clock.advance(29)
    assert (await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)).status == 429
    clock.advance(1)
    recovered = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert recovered.status == 200
    assert recovered.headers["x-ratelimit-remaining-requests"] == "0"
    # Another client's budget is its own.
    assert (
        await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=bearer(keys.key("full")))
    ).status == 200


async def test_token_limit_counts_usage_of_json_and_streamed_answers(
    gw: Client, keys: KeysFile, clock: FakeClock
) -> None:
    headers = bearer(keys.key("tpm"))
    first = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1", stream=True), headers=headers)
    await first.read()
    # While it runs, the request holds the whole budget (its reservation, capped at one window's worth).
    assert first.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-limit-requests" not in first.headers
    # The stream reported 12 tokens: the reservation is settled and 8 are left, which the second holds.
    second = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert second.status == 200 and second.headers["x-ratelimit-remaining-tokens"] == "0"
    assert second.headers["x-ratelimit-reset-tokens"] == "1m36s"  # 8 - 20 = -12: 32 tokens at 1 per 3 s
    # Settled at 12: 8 - 12 = -4: refused until the budget is above zero again (4 tokens at 1 per 3s, then one more).
    third = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert third.status == 429
    assert third.headers["Retry-After"] == "15"
    assert (await envelope(third))["error"]["type"] == "tokens"
    clock.advance(15)
    assert (await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)).status == 200


async def test_concurrent_requests_cannot_all_pass_on_one_token_budget(
    gw: Client, keys: KeysFile, upstream: ChatProvider
) -> None:
    """Each request reserves what it may use before it goes upstream: while one holds the 20-token budget, the
    others are refused, however many arrive at once; once it has settled (12 used), the next is admitted."""
    headers = bearer(keys.key("tpm"))
    first = await gw.post("/v1/chat/completions", json=chat("fake/held", stream=True), headers=headers)
    assert first.status == 200
    await upstream.holding.wait()
    others = [gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers) for _ in range(10)]
    refused = [await response for response in others]
    assert [r.status for r in refused] == [429] * 10
    assert {(await envelope(r))["error"]["type"] for r in refused} == {"tokens"}
    assert len(upstream.requests) == 1  # none of them reached the provider
    upstream.release.set()
    await first.read()
    after = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert after.status == 200


def _sent(body: dict[str, Any]) -> int:
    """The bytes aiohttp sends for `json=body`."""
    return len(json.dumps(body).encode())


async def test_a_stream_without_usage_is_charged_an_estimate_not_nothing(gw: Client, keys: KeysFile) -> None:
    """The answer breaks off before any usage report: the reservation settles at the input estimate plus the
    relayed bytes as tokens (never more than the body's max_tokens), 4 bytes a token."""
    headers = bearer(keys.key("kilo"))
    body = chat("fake/truncated", stream=True, max_tokens=500)
    response = await gw.post("/v1/chat/completions", json=body, headers=headers)
    relayed, cut = await read_until_cut(response)
    assert cut and relayed.startswith(b"data: ")
    limiter, quota = gw.app[ACCESS].limiter, Quota(tokens=1000)
    held = 1000 - (-(-_sent(body) // 4) + 500)
    settled = 1000 - (-(-_sent(body) // 4) + -(-len(relayed) // 4))
    for _ in range(250):  # the sink settles once the handler has ended, just after the client saw the cut
        level = limiter.reserve_now("key:kilo", quota, 0).tokens.remaining
        if level != held:
            break
        await asyncio.sleep(0.02)
    assert level == settled


async def test_an_error_answer_gives_the_reservation_back(gw: Client, keys: KeysFile) -> None:
    headers = bearer(keys.key("tpm"))
    failed = await gw.post("/v1/chat/completions", json=chat("fake/fail"), headers=headers)
    assert failed.status == 500
    again = await gw.post("/v1/chat/completions", json=chat("fake/alpha-1"), headers=headers)
    assert again.status == 200  # nothing was charged for the failure: the whole budget was there to hold


async def test_keys_file_changes_are_taken_without_restart(gw: Client, keys: KeysFile, tmp_path: Path) -> None:
    key = keys.key("full")
    assert (await gw.get("/v1/models", headers=bearer(key))).status == 200
    access = gw.app[ACCESS]
    text = keys.path.read_text().replace("name: full\n", "name: full\n  revoked: true\n")
    replacement = tmp_path / "next.yaml"
    replacement.write_text(text)
    os.replace(replacement, keys.path)  # as a Secret volume swaps its files
    assert await reload_keys(access)
    response = await gw.get("/v1/models", headers=bearer(key))
    assert response.status == 401
    assert (await envelope(response))["error"]["message"] == "this API key has been revoked"
    # A broken file is refused and the loaded keys stay.
    keys.path.write_text("keys: [")
    assert not await reload_keys(access)
    assert (await gw.get("/v1/models", headers=bearer(keys.key("narrow")))).status == 200
    assert not await reload_keys(access)


async def test_credentials_are_never_logged(aiohttp_client: Any, upstream: ChatProvider, keys: KeysFile) -> None:
    with structlog.testing.capture_logs() as logs:
        app = gateway_app(auth_settings(auth_keys_file=str(keys.path)), access_table(upstream.url))
        gw: Client = await aiohttp_client(app)
        for key in keys.keys.values():
            await (await gw.get("/v1/models", headers=bearer(key.key))).read()
        await gw.close()
    assert logs, "expected start-up lines at least"
    text = repr(logs)
    for key in keys.keys.values():
        assert key.key not in text and key.key.split("_", 2)[2] not in text


async def test_unknown_paths_also_need_credentials(gw: Client) -> None:
    assert (await gw.get("/v1/nothing")).status == 401


async def test_a_bad_keys_file_stops_start_up(tmp_path: Path, upstream: ChatProvider) -> None:
    from gateway.errors import ConfigError

    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{name: a}]\n")
    with pytest.raises(ConfigError, match=r"\$.keys\[0\]: 'sha256' is a required property"):
        gateway_app(auth_settings(auth_keys_file=str(path)), access_table(upstream.url))


@pytest.fixture
def process_gateway(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`python -m gateway keys new`, then `python -m gateway` with AUTH_ENABLED and that key's line in its file."""
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "new", "cli-user"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key, line = made.stdout.splitlines()[1].strip(), made.stdout.splitlines()[3]
    keys_path = tmp_path / "keys.yaml"
    keys_path.write_text("keys:\n" + line + "\n")
    demo_port, gw_port = free_port(), free_port()
    env = {
        **os.environ,
        "DEMO_API_URL": f"http://127.0.0.1:{demo_port}/v1",
        "AUTH_ENABLED": "true",
        "AUTH_KEYS_FILE": str(keys_path),
    }
    log_path = tmp_path / "gateway.log"
    with running(["gateway.demo", "--port", str(demo_port)], env, demo_port), log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", *gateway_args(gw_port)], cwd=ROOT, env=env, stdout=log)
        try:
            wait_listening(gw_port, process)
            yield f"http://127.0.0.1:{gw_port}", key, log_path
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_a_real_gateway_process_with_a_key_made_by_the_cli(process_gateway: tuple[str, str, Path]) -> None:
    base, key, log_path = process_gateway
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.get(f"{base}/v1/models") as response:
            assert response.status == 401
        async with http.get(f"{base}/v1/models?service_type=llm", headers={"X-API-Key": key}) as response:
            assert response.status == 200
            assert [m["id"] for m in (await response.json())["data"]] == ["demo/demo-echo", "demo/demo-story"]
        async with http.get(f"{base}/health") as response:
            assert response.status == 200
    text = log_path.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    assert "client auth on" in events
    assert key not in text and key.split("_", 2)[2] not in text


async def test_an_upload_reserves_from_the_token_budget_and_its_reported_usage_settles_it(
    aiohttp_client: Any, aiohttp_server: Any, keys: KeysFile, clock: FakeClock
) -> None:
    """A transcription reserves its output allowance (its bytes are audio, not tokens) and is charged the usage
    the provider reports: 35 tokens on a 20-token budget, so the next upload is refused until the budget refills."""
    usage = {"type": "tokens", "input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
    provider = await start_provider(aiohttp_server, answering({"text": "hi", "usage": usage}))
    table = parse_table(
        f"""
providers:
  fake:
    id: fake
    url: {provider.url}/v1
    auth_type: none
    endpoints:
      audio_transcriptions: {{name: audio_transcriptions, method: POST, endpoint: /audio/transcriptions}}
""",
        {},
    )
    client = await aiohttp_client(gateway_app(auth_settings(auth_keys_file=str(keys.path)), table, clock))
    headers = {**bearer(keys.key("tpm")), "Content-Type": content_type()}
    upload = form(("model", b"fake/whisper-1", None), ("file", b"RIFF" + bytes(4000), "a.wav"))
    first = await client.post("/v1/audio/transcriptions", data=upload, headers=headers)
    assert first.status == 200 and (await first.json())["text"] == "hi"
    second = await client.post("/v1/audio/transcriptions", data=upload, headers=headers)
    assert second.status == 429
    assert (await envelope(second))["error"]["type"] == "tokens"
    assert len(provider.requests) == 1
