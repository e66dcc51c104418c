"""Anthropic's Messages API through the gateway: the official `anthropic` SDK (unchanged but for its base URL)
against a fake Anthropic on 127.0.0.1, the exact bytes both ways, streams passed on as they come, the gateway's
own errors in Anthropic's envelope and the provider's passed through, x-api-key client auth, and usage in the
metrics and the token budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION

from gateway.config.settings import Settings
from tests.fakes.access import write_keys
from tests.fakes.gateways import Gateway, auth_settings, start_gateway, telemetry_settings
from tests.fakes.native import (
    COUNT,
    MESSAGE,
    MESSAGE_START,
    MESSAGE_STREAM,
    OVERLOADED,
    AnthropicProvider,
)
from tests.fakes.tables import PROVIDER_KEY, entry, serving, table_of
from tests.fakes.telemetry import samples

ENV = {"CLAUDE_API_KEY": PROVIDER_KEY}
REQUEST = b'{"model":"claude-fake","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}'
STREAMED = b'{"model":"claude-fake","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}'


def claude_table(fake: AnthropicProvider, **extra: Any) -> Any:
    base = entry("claude", fake.url + "/v1", "xheader", model_prefixes=["claude-", "held", "overloaded"], **extra)
    return table_of(serving(base, messages="/messages", count_tokens="/messages/count_tokens"), env=ENV)


@pytest.fixture
async def fake(aiohttp_server: Any) -> AnthropicProvider:
    return await AnthropicProvider().start(aiohttp_server)


@pytest.fixture
async def gw(aiohttp_client: Any, fake: AnthropicProvider) -> Gateway:
    return await start_gateway(aiohttp_client, claude_table(fake), Settings())


def sdk(gw: Gateway, key: str = "client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(gw.client.make_url("")), api_key=key, max_retries=0, timeout=10)


async def test_the_sdk_creates_a_message_and_the_provider_gets_its_own_key(
    gw: Gateway, fake: AnthropicProvider
) -> None:
    async with sdk(gw) as client:
        message = await client.messages.create(
            model="claude-fake", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].type == "text" and message.content[0].text == "Hello from the fake"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 6)
    seen = fake.last
    assert seen.path == "/v1/messages"
    assert seen.json() == {"model": "claude-fake", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    # The provider's key replaces the client's; the SDK's version header goes through.
    assert seen.headers["x-api-key"] == PROVIDER_KEY
    assert seen.headers["anthropic-version"] == ANTHROPIC_API_VERSION
    assert "client-key" not in str(seen.raw_headers)
    assert (await gw.settled())[-1].operation == "chat"


async def test_the_sdk_streams_a_message(gw: Gateway) -> None:
    async with (
        sdk(gw) as client,
        client.messages.stream(
            model="claude-fake", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert text == "Hello stream"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)


async def test_the_sdk_counts_tokens(gw: Gateway, fake: AnthropicProvider) -> None:
    async with sdk(gw) as client:
        counted = await client.messages.count_tokens(model="claude-fake", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens == 9
    assert fake.last.path == "/v1/messages/count_tokens"
    assert fake.last.json() == {"model": "claude-fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_bytes_pass_unchanged_both_ways(gw: Gateway, fake: AnthropicProvider) -> None:
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    plain = await gw.client.post("/v1/messages", data=REQUEST, headers=headers)
    assert plain.status == 200 and await plain.read() == MESSAGE
    assert plain.headers["request-id"] == "req_fake"
    assert fake.last.body == REQUEST
    streamed = await gw.client.post("/v1/messages", data=STREAMED, headers=headers)
    assert streamed.headers["Content-Type"] == "text/event-stream"
    assert await streamed.read() == MESSAGE_STREAM
    assert fake.last.body == STREAMED
    counted = await gw.client.post("/v1/messages/count_tokens", data=REQUEST, headers=headers)
    assert await counted.read() == COUNT


async def test_the_first_event_reaches_the_client_while_the_provider_holds_the_rest(
    gw: Gateway, fake: AnthropicProvider
) -> None:
    body = STREAMED.replace(b"claude-fake", b"held")
    response = await gw.client.post("/v1/messages", data=body, headers={"Content-Type": "application/json"})
    received = b""
    while len(received) < len(MESSAGE_START):
        received += await asyncio.wait_for(response.content.readany(), 5)
    assert received == MESSAGE_START
    assert fake.holding.is_set() and not fake.release.is_set()
    fake.release.set()
    assert received + await response.read() == MESSAGE_STREAM


async def test_the_provider_error_passes_through_as_the_sdks_own_exception(gw: Gateway) -> None:
    async with sdk(gw) as client:
        with pytest.raises(anthropic.OverloadedError) as raised:
            await client.messages.create(model="overloaded", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 529
    assert raised.value.body == orjson.loads(OVERLOADED)
    assert raised.value.request_id == "req_fake"


async def test_the_gateways_own_errors_come_in_anthropics_envelope(gw: Gateway, fake: AnthropicProvider) -> None:
    async with sdk(gw) as client:
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await client.messages.create(model="gpt-4o", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.BadRequestError) as empty:
            await client.messages.create(model="claude-fake", max_tokens=8, messages=[])
    assert unknown.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no provider serves model 'gpt-4o': name one with a provider/model id (e.g. openai/gpt-4o), "
            "the ?provider= query or a provider field",
        },
    }
    assert empty.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'messages' is required and must be a non-empty array"},
    }
    assert fake.requests == []


async def test_a_provider_without_the_endpoint_is_no_candidate(aiohttp_client: Any, fake: AnthropicProvider) -> None:
    table = table_of(entry("plain", fake.url + "/v1", model_prefixes=["claude-"]))
    gw = await start_gateway(aiohttp_client, table, Settings())
    response = await gw.client.post("/v1/messages", data=REQUEST)
    assert response.status == 404
    assert await response.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "provider 'plain' does not serve messages; it serves: chat, models",
        },
    }
    assert fake.requests == []


async def test_the_clients_version_and_beta_headers_replace_the_tables_default(
    aiohttp_client: Any, fake: AnthropicProvider
) -> None:
    table = claude_table(fake, headers={"anthropic-version": "2023-06-01"})
    gw = await start_gateway(aiohttp_client, table, Settings())
    await gw.client.post("/v1/messages", data=REQUEST)
    assert [v for k, v in fake.last.raw_headers if k.lower() == b"anthropic-version"] == [b"2023-06-01"]
    chosen = {"anthropic-version": "2099-01-01", "anthropic-beta": "tools-2099"}
    await gw.client.post("/v1/messages", data=REQUEST, headers=chosen)
    assert [v for k, v in fake.last.raw_headers if k.lower() == b"anthropic-version"] == [b"2099-01-01"]
    assert fake.last.headers["anthropic-beta"] == "tools-2099"


async def test_x_api_key_authenticates_the_sdk_and_the_budget_is_charged_its_usage(
    aiohttp_client: Any, fake: AnthropicProvider, tmp_path: Path
) -> None:
    keys = write_keys(tmp_path, {"coder": {"policy": "tpm"}}, {"tpm": {"tokens_per_minute": 100}})
    settings = auth_settings(auth_keys_file=str(keys.path))
    gw = await start_gateway(aiohttp_client, claude_table(fake), settings)
    hi = [{"role": "user", "content": "hi"}]
    async with sdk(gw, keys.key("coder")) as client:
        await client.messages.create(model="claude-fake", max_tokens=8, messages=hi)
        assert fake.last.headers["x-api-key"] == PROVIDER_KEY
        # 17 in (cache reads and writes count) + 6 out: 77 of 100 left. Counting tokens uses none.
        counted = await client.messages.with_raw_response.count_tokens(model="claude-fake", messages=hi)
        assert counted.headers["x-ratelimit-remaining-tokens"] == "77"
        stream = await client.messages.create(model="claude-fake", max_tokens=8, messages=hi, stream=True)
        async for _ in stream:
            pass
        # The stream's 5 in and 4 out.
        again = await client.messages.with_raw_response.count_tokens(model="claude-fake", messages=hi)
        assert again.headers["x-ratelimit-remaining-tokens"] == "68"
    async with sdk(gw, "not-a-key") as stranger:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await stranger.messages.create(model="claude-fake", max_tokens=8, messages=hi)
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }


async def test_metrics_count_the_tokens_of_plain_and_streamed_messages(
    aiohttp_client: Any, fake: AnthropicProvider
) -> None:
    gw = await start_gateway(aiohttp_client, claude_table(fake), telemetry_settings(max_request_body_size=1 << 20))
    headers = {"Content-Type": "application/json"}
    assert await (await gw.client.post("/v1/messages", data=REQUEST, headers=headers)).read() == MESSAGE
    assert await (await gw.client.post("/v1/messages", data=STREAMED, headers=headers)).read() == MESSAGE_STREAM
    await gw.settled(2)
    found = await samples(gw.app)
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "claude"}
    sums = {
        kind: sum(v for _, v in found.matching("gen_ai_client_token_usage_sum", gen_ai_token_type=kind, **labels))
        for kind in ("input", "output")
    }
    assert sums == {"input": 17 + 5, "output": 6 + 4}
    counts = sum(v for _, v in found.matching("gen_ai_client_token_usage_count", gen_ai_token_type="input", **labels))
    assert counts == 2


async def test_an_image_is_refused_while_vision_is_off(gw: Gateway, fake: AnthropicProvider) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    async with sdk(gw) as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="claude-fake", max_tokens=8, messages=[{"role": "user", "content": [image]}]
            )
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "image inputs are disabled on this gateway (set ENABLE_VISION=true to allow them)",
        },
    }
    assert fake.requests == []


async def test_an_unknown_path_under_v1_messages_is_a_404_in_anthropics_envelope(gw: Gateway) -> None:
    async with sdk(gw) as client:
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await client.messages.batches.retrieve("msgbatch_1")
    body = unknown.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
