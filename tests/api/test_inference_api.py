"""The Inference API of seed 001 (`/api/v1/inference/*`): one more dialect over the same request path. Real fake
providers behind the repository's own providers.yaml (its prefix rules pick them), the exact bytes each provider
receives, and the envelope each client gets back, stream events one by one."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.exchange import Usage
from tests.fakes.bodies import chunk
from tests.fakes.gateways import TINY, Gateway, start_gateway
from tests.fakes.providers import (
    EMBEDDING_ANSWER,
    PROVIDER_HEADERS,
    SurfacesProvider,
    answering,
    start_provider,
)
from tests.fakes.tables import PROVIDER_KEY, entry, serving, shipped_table, table_of

API = "/api/v1/inference"
JSON = "application/json"


@dataclass
class Seed:
    gateway: Gateway
    openai: SurfacesProvider
    anthropic: SurfacesProvider

    async def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return await self.gateway.client.post(API + path, data=orjson.dumps(body), headers={"Content-Type": JSON})


async def seeded(aiohttp_client: Any, aiohttp_server: Any, **settings: Any) -> Seed:
    openai = await SurfacesProvider().start(aiohttp_server)
    anthropic = await SurfacesProvider(models=("claude-sonnet-4-20250514",)).start(aiohttp_server)
    table = shipped_table({"openai": f"{openai.url}/v1", "anthropic": f"{anthropic.url}/v1"})
    gateway = await start_gateway(aiohttp_client, table, TINY, **settings)
    return Seed(gateway, openai, anthropic)


@pytest.fixture
async def seed(aiohttp_client: Any, aiohttp_server: Any) -> Seed:
    return await seeded(aiohttp_client, aiohttp_server)


async def body_of(response: Any) -> Any:
    assert response.headers["Content-Type"].startswith(JSON)
    return orjson.loads(await response.read())


def events(raw: bytes) -> list[Any]:
    """The stream's events: each `data: <json>` and its blank line, nothing else in between."""
    assert raw.endswith(b"\n\n")
    parts = raw[:-2].split(b"\n\n")
    assert all(part.startswith(b"data: ") and b"\n" not in part for part in parts), raw
    return [orjson.loads(part[6:]) for part in parts]


# --- chat ----------------------------------------------------------------------------------------------------


async def test_chat_is_translated_to_the_providers_chat_and_back_into_the_envelope(seed: Seed) -> None:
    body = {
        "model": "claude-sonnet-4-20250514",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "maxTokens": 100,
    }
    response = await seed.post("/chat", body)
    assert response.status == 200
    assert await body_of(response) == {
        "success": True,
        "data": {
            "content": "one two three four five",
            "model": "claude-sonnet-4-20250514",
            "provider": "anthropic",
            "finishReason": None,
            "toolCalls": [],
            "usage": {"inputTokens": 11, "outputTokens": 7},
        },
    }
    # The prefix rule `claude` picked anthropic; it received OpenAI's chat request, with its own key.
    assert not seed.openai.requests
    seen = seed.anthropic.last
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.body == (
        b'{"model":"claude-sonnet-4-20250514","messages":[{"role":"user","content":"What is the capital of France?"}],'
        b'"max_tokens":100}'
    )
    assert seen.headers["x-api-key"] == PROVIDER_KEY
    assert seen.headers["Content-Type"] == JSON
    assert seen.headers["Accept-Encoding"] == "identity"
    # The same sinks: the usage read from the provider's answer, the provider and model on the record.
    (exchange,) = await seed.gateway.settled()
    assert exchange.operation == "chat" and exchange.route == f"{API}/chat"
    assert (exchange.provider, exchange.model, exchange.stream) == ("anthropic", "claude-sonnet-4-20250514", False)
    assert exchange.scanner is not None and exchange.scanner.usage == Usage(11, 7)
    assert exchange.upstream_request_id == PROVIDER_HEADERS["x-request-id"]
    assert response.headers["X-Request-ID"] == exchange.request_id


async def test_every_chat_field_reaches_the_provider_under_openais_name(seed: Seed) -> None:
    body = {
        "model": "gpt-4o",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "toolCalls": [{"id": "c1", "name": "weather", "arguments": {}}]},
            {"role": "tool", "toolCallId": "c1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}], "name": "ann"},
        ],
        "maxTokens": 5,
        "temperature": 0.5,
        "topP": 1,
        "stop": ["\n"],
        "seed": 7,
        "user": "u1",
        "presencePenalty": 0,
        "frequencyPenalty": 0.25,
        "responseFormat": {"type": "text"},
        "tools": [{"name": "weather", "description": "d", "parameters": {"type": "object"}}],
        "toolChoice": {"name": "weather"},
        "provider": "openai",
    }
    response = await seed.post("/chat", body)
    assert response.status == 200
    assert seed.openai.last.json() == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
            },
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
            {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}], "name": "ann"},
        ],
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 1,
        "stop": ["\n"],
        "seed": 7,
        "user": "u1",
        "presence_penalty": 0,
        "frequency_penalty": 0.25,
        "response_format": {"type": "text"},
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    }


_HI = {"role": "user", "content": "hi"}


async def test_tool_calls_whole(seed: Seed) -> None:
    response = await seed.post("/chat", {"model": "openai/tooler", "messages": [_HI]})
    assert response.status == 200
    assert (await body_of(response))["data"] == {
        "content": "",
        "model": "tooler-0613",
        "provider": "openai",
        "finishReason": "tool_calls",
        "toolCalls": [{"id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'}],
        "usage": {"inputTokens": 11, "outputTokens": 7},
    }


# --- streams -------------------------------------------------------------------------------------------------


async def test_a_stream_becomes_the_apis_events_with_usage_on_message_stop(seed: Seed) -> None:
    response = await seed.post("/chat/stream", {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert events(await response.read()) == [
        {"type": "content_block_delta", "delta": {"text": "Hello"}},
        {"type": "content_block_delta", "delta": {"text": " there"}},
        {"type": "content_block_delta", "delta": {"text": " friend"}},
        {"type": "message_stop", "finishReason": "stop", "usage": {"inputTokens": 5, "outputTokens": 3}},
    ]
    # openai's entry says stream_usage: the gateway asked for the usage chunk, which message_stop carries.
    assert seed.openai.last.body == (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"stream":true,'
        b'"stream_options":{"include_usage":true}}'
    )
    (exchange,) = await seed.gateway.settled()
    assert exchange.stream and exchange.usage_requested
    assert exchange.scanner is not None and exchange.scanner.usage == Usage(5, 3)


async def test_a_streamed_tool_call_comes_as_tool_call_deltas(seed: Seed) -> None:
    response = await seed.post("/chat/stream", {"model": "openai/tooler", "messages": [_HI]})
    assert events(await response.read()) == [
        {"type": "tool_call_delta", "delta": {"index": 0, "id": "call_1", "name": "weather", "arguments": ""}},
        {"type": "tool_call_delta", "delta": {"index": 0, "arguments": '{"city":'}},
        {"type": "tool_call_delta", "delta": {"index": 0, "arguments": '"Paris"}'}},
        {"type": "message_stop", "finishReason": "tool_calls", "usage": None},
    ]


async def test_a_provider_not_asked_for_stream_usage_ends_with_usage_null(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    mistral = await SurfacesProvider().start(aiohttp_server)
    table = shipped_table({"mistral": f"{mistral.url}/v1"})
    assert not table.providers["mistral"].stream_usage  # it rejects stream_options
    gateway = await start_gateway(aiohttp_client, table, TINY)
    response = await gateway.client.post(f"{API}/chat/stream", json={"model": "mistral-small", "messages": [_HI]})
    assert events(await response.read())[-1] == {"type": "message_stop", "finishReason": "stop", "usage": None}
    assert mistral.last.json() == {"model": "mistral-small", "messages": [_HI], "stream": True}


async def test_the_first_event_arrives_while_the_provider_holds_the_rest(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}))
        await release.wait()
        await response.write(chunk({"content": "lo"}) + chunk({}, "stop") + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, routes={"/v1/chat/completions": held})
    gateway = await start_gateway(aiohttp_client, shipped_table({"openai": f"{provider.url}/v1"}), TINY)
    response = await gateway.client.post(f"{API}/chat/stream", json={"model": "gpt-4o", "messages": [_HI]})
    assert response.status == 200
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert first == b'data: {"type":"content_block_delta","delta":{"text":"Hel"}}\n\n'
    assert not release.is_set()  # the provider still holds the rest
    release.set()
    assert events(await response.read()) == [
        {"type": "content_block_delta", "delta": {"text": "lo"}},
        {"type": "message_stop", "finishReason": "stop", "usage": None},
    ]


async def test_events_split_anywhere_across_reads_come_out_whole(aiohttp_client: Any, aiohttp_server: Any) -> None:
    stream = (
        chunk({"content": "a\u00e9"})
        + b": keep-alive\r\n\r\n"
        + chunk({"content": "b"}).replace(b"\n", b"\r\n")
        + chunk({}, "length")
        + b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}\n\n'
        + b"data: [DONE]\n\n"
    )

    async def bytewise(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(0, len(stream), 7):
            await response.write(stream[n : n + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, routes={"/v1/chat/completions": bytewise})
    gateway = await start_gateway(aiohttp_client, shipped_table({"openai": f"{provider.url}/v1"}), TINY)
    response = await gateway.client.post(f"{API}/chat/stream", json={"model": "gpt-4o", "messages": [_HI]})
    assert events(await response.read()) == [
        {"type": "content_block_delta", "delta": {"text": "a\u00e9"}},
        {"type": "content_block_delta", "delta": {"text": "b"}},
        {"type": "message_stop", "finishReason": "length", "usage": {"inputTokens": 2, "outputTokens": 1}},
    ]


async def test_a_stream_the_provider_breaks_off_is_cut_without_message_stop(seed: Seed) -> None:
    response = await seed.post("/chat/stream", {"model": "openai/truncated", "messages": [_HI]})
    raw = b""
    with pytest.raises(Exception):  # noqa: B017 - the client sees the connection cut (payload error)
        async for piece in response.content.iter_any():
            raw += piece
    assert b"message_stop" not in raw


# --- embeddings, images, models -------------------------------------------------------------------------------


async def test_embed(seed: Seed) -> None:
    response = await seed.post("/embed", {"model": "text-embedding-3-small", "input": "The quick brown fox"})
    assert response.status == 200
    assert await body_of(response) == {
        "success": True,
        "data": {
            "embeddings": [[0.125, -1.0], [0.5, 0.25]],  # in the order of the input
            "model": EMBEDDING_ANSWER["model"],
            "provider": "openai",
            "usage": {"inputTokens": 4, "outputTokens": 0},
        },
    }
    assert seed.openai.last.path == "/v1/embeddings"
    assert seed.openai.last.body == b'{"model":"text-embedding-3-small","input":"The quick brown fox"}'


async def test_images(seed: Seed) -> None:
    body = {"model": "gpt-image-1", "prompt": "A sunset over mountains", "size": "1024x1024", "n": 1}
    response = await seed.post("/images", body)
    assert response.status == 200
    assert await body_of(response) == {
        "success": True,
        "data": {
            "images": [{"b64Json": "iVBORw0KGgo=", "revisedPrompt": "A red sunset over snowy mountains"}],
            "model": "gpt-image-1",
            "provider": "openai",
            "usage": {"inputTokens": 9, "outputTokens": 4160},
        },
    }
    assert seed.openai.last.path == "/v1/images/generations"
    assert seed.openai.last.body == (
        b'{"model":"gpt-image-1","prompt":"A sunset over mountains","size":"1024x1024","n":1}'
    )


async def test_models_lists_every_served_providers_models_or_one(seed: Seed) -> None:
    response = await seed.gateway.client.get(f"{API}/models")
    assert response.status == 200
    listed = (await body_of(response))["data"]
    assert sorted((m["provider"], m["id"]) for m in listed) == [
        ("anthropic", "claude-sonnet-4-20250514"),
        ("openai", "plain"),
        ("openai", "streamer"),
    ]
    # Never synced (the usage store is off here): asked live, `syncedAt` null.
    assert {"id": "plain", "provider": "openai", "ownedBy": "fake", "created": 1, "syncedAt": None} in listed
    one = await seed.gateway.client.get(f"{API}/models", params={"provider": "anthropic"})
    assert await body_of(one) == {
        "success": True,
        # anthropic's list shape (the table's models_list) has no owner and a created_at the fake leaves out.
        "data": [
            {
                "id": "claude-sonnet-4-20250514",
                "provider": "anthropic",
                "ownedBy": "anthropic",
                "created": 0,
                "syncedAt": None,
            }
        ],
    }


async def test_empty_messages_are_dropped_as_on_the_openai_route(seed: Seed) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": ""}, _HI]}
    assert (await seed.post("/chat", body)).status == 200
    assert seed.openai.last.body == b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'


# --- transcription -------------------------------------------------------------------------------------------

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4


async def test_transcribe_json_becomes_the_providers_form_upload(seed: Seed) -> None:
    body = {"model": "whisper-1", "audio": base64.b64encode(WAV).decode(), "language": "en", "temperature": 0}
    response = await seed.post("/transcribe", body)
    assert response.status == 200
    assert await body_of(response) == {
        "success": True,
        "data": {
            "text": "Hello there",
            "model": "whisper-1",
            "provider": "openai",
            "usage": {"inputTokens": 14, "outputTokens": 3},
        },
    }
    seen = seed.openai.last
    assert seen.path == "/v1/audio/transcriptions"
    content_type = seen.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=gateway-")
    boundary = content_type.rpartition("=")[2].encode()
    assert seen.body == (
        b'--%(b)s\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--%(b)s\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n'
        b'--%(b)s\r\nContent-Disposition: form-data; name="temperature"\r\n\r\n0\r\n'
        b'--%(b)s\r\nContent-Disposition: form-data; name="response_format"\r\n\r\njson\r\n'
        b'--%(b)s\r\nContent-Disposition: form-data; name="file"; filename="audio.wav"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%(wav)s\r\n--%(b)s--\r\n" % {b"b": boundary, b"wav": WAV}
    )
    # The same form as aiohttp's own parser reads it.
    form = await _parsed_form(seen.body, content_type)
    assert form == {"model": "whisper-1", "language": "en", "temperature": "0", "response_format": "json", "file": WAV}
    (exchange,) = await seed.gateway.settled()
    assert (exchange.operation, exchange.provider) == ("audio_transcriptions", "openai")


async def test_transcribe_multipart_is_relayed_and_its_answer_enveloped(seed: Seed) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", WAV, filename="recording.wav", content_type="audio/wav")
    response = await seed.gateway.client.post(f"{API}/transcribe", data=form)
    assert response.status == 200
    assert (await body_of(response))["data"]["text"] == "Hello there"
    seen = seed.openai.last
    assert await _parsed_form(seen.body, seen.headers["Content-Type"]) == {"model": "whisper-1", "file": WAV}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("response_format", "srt", "'response_format' must be json or verbose_json here"),
        ("response_format", "text", "'response_format' must be json or verbose_json here"),
        ("stream", "true", "'stream' is not served here"),
    ],
)
async def test_transcribe_multipart_whose_answer_could_not_be_enveloped_is_refused_up_front(
    seed: Seed, field: str, value: str, message: str
) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field(field, value)
    form.add_field("file", WAV, filename="recording.wav", content_type="audio/wav")
    response = await seed.gateway.client.post(f"{API}/transcribe", data=form)
    answer = await body_of(response)
    assert (response.status, answer["error"]["code"]) == (400, "BAD_REQUEST")
    assert answer["error"]["message"].startswith(message)
    assert not seed.openai.requests


async def test_transcribe_multipart_verbose_json_is_relayed(seed: Seed) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("response_format", "verbose_json")
    form.add_field("file", WAV, filename="recording.wav", content_type="audio/wav")
    response = await seed.gateway.client.post(f"{API}/transcribe", data=form)
    assert response.status == 200
    assert (await body_of(response))["data"]["text"] == "Hello there"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "whisper-1"}, "audio is required"),
        ({"model": "whisper-1", "audio": "<base64-encoded-audio>"}, "audio must be base64"),
        ({"model": "whisper-1", "audio": "AAAA", "filename": "../x.mp3"}, "filename must be a plain file name"),
        ({"model": "whisper-1", "audio": "AAAA", "responseFormat": "srt"}, "unknown field 'responseFormat'"),
    ],
)
async def test_transcribe_refusals(seed: Seed, body: dict[str, Any], message: str) -> None:
    response = await seed.post("/transcribe", body)
    answer = await body_of(response)
    assert (response.status, answer["error"]["code"]) == (400, "BAD_REQUEST")
    assert answer["error"]["message"].startswith(message)
    assert not seed.openai.requests


async def _parsed_form(body: bytes, content_type: str) -> dict[str, Any]:
    """A multipart form as the standard library's MIME parser reads it: field name -> text, or bytes for a file."""
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    assert isinstance(message, EmailMessage) and not message.defects
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(data, bytes)
        out[name] = data if part.get_filename() else data.decode()
    return out


async def test_a_model_group_serves_the_api_with_its_fallbacks(aiohttp_client: Any, aiohttp_server: Any) -> None:
    down = await start_provider(aiohttp_server, answering({"error": {"message": "busy"}}, 503))
    up = await SurfacesProvider().start(aiohttp_server)
    entries = [
        serving(entry(pid, f"{url}/v1"), audio_transcriptions="/audio/transcriptions")
        for pid, url in (("a", down.url), ("b", up.url))
    ]
    deployments = [{"provider": "a", "model": "m-a"}, {"provider": "b", "model": "m-b"}]
    table = table_of(*entries, models={"smart": {"deployments": deployments}})
    gateway = await start_gateway(aiohttp_client, table, TINY)
    chat = await gateway.client.post(f"{API}/chat", json={"model": "smart", "messages": [_HI]})
    assert chat.status == 200
    data = (await body_of(chat))["data"]
    assert (data["provider"], data["model"], data["content"]) == ("b", "m-b", "one two three four five")
    audio = {"model": "smart", "audio": base64.b64encode(WAV).decode()}
    heard = await gateway.client.post(f"{API}/transcribe", json=audio)
    assert (await body_of(heard))["data"]["text"] == "Hello there"
    # Each deployment got the form with its own model name, under a boundary of its own.
    first, second = down.requests[-1], up.last
    assert (await _parsed_form(first.body, first.headers["Content-Type"]))["model"] == "m-a"
    assert (await _parsed_form(second.body, second.headers["Content-Type"]))["model"] == "m-b"
    assert first.headers["Content-Type"] != second.headers["Content-Type"]
