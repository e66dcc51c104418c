"""The rest of OpenAI's JSON surface through the official SDK, unchanged but for `base_url`: embeddings, legacy
completions (plain and streamed), moderations, image generation and speech (binary audio relayed as it comes).
Each route is one route-table row and one endpoint name in the table, routed by model exactly like chat."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.fakes.tables import entry

ENDPOINTS = {
    "embeddings": {"name": "embeddings", "method": "POST", "endpoint": "/embeddings"},
    "completions": {"name": "completions", "method": "POST", "endpoint": "/completions"},
    "moderations": {"name": "moderations", "method": "POST", "endpoint": "/moderations"},
    "images_generations": {"name": "images_generations", "method": "POST", "endpoint": "/images/generations"},
    "audio_speech": {"name": "audio_speech", "method": "POST", "endpoint": "/audio/speech"},
    "rerank": {"name": "rerank", "method": "POST", "endpoint": "/rerank"},
}
EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}
COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": " world", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip
MODERATION = {
    "id": "modr-1", "model": "omni-moderation-latest",
    "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
}  # fmt: skip
IMAGE = {"created": 1, "data": [{"b64_json": "iVBORw0KGgo="}]}
AUDIO = bytes(range(256)) * 64  # 16 KiB of binary, every byte value


async def _json(payload: dict) -> web.Response:
    return web.json_response(payload)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(COMPLETION)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for text in (" wor", "ld"):
        chunk = {**COMPLETION, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]}
        chunk.pop("usage")
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def speech(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
    await response.prepare(request)
    for start in range(0, len(AUDIO), 4096):
        await response.write(AUDIO[start : start + 4096])
    await response.write_eof()
    return response


@pytest.fixture
async def sdk(gateway, fake_provider):
    fake = await fake_provider(
        {
            "/v1/embeddings": lambda r: _json(EMBEDDING),
            "/v1/completions": completions,
            "/v1/moderations": lambda r: _json(MODERATION),
            "/v1/images/generations": lambda r: _json(IMAGE),
            "/v1/audio/speech": speech,
            "/v1/rerank": lambda r: _json({"results": [{"index": 1, "relevance_score": 0.9}]}),
        }
    )
    provider = entry("openai", fake.url + "/v1", "bearer", model_prefixes=["gpt-", "text-", "tts-", "dall-e", "omni-"])
    provider["endpoints"].update(ENDPOINTS)
    chat_only = entry("other", fake.url + "/v1", model_prefixes=["other-"])
    client = await gateway(provider, chat_only, env={"OPENAI_API_KEY": "sk-upstream"})
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="client-key", max_retries=0, timeout=10
    ) as sdk_client:
        yield sdk_client, fake, client


async def test_embeddings(sdk) -> None:
    client, fake, _ = sdk
    result = await client.embeddings.create(model="openai/text-embedding-3-small", input="hello")
    assert result.data[0].embedding == [0.25, -0.5, 1.0]
    assert (fake.last.path, fake.last.headers["Authorization"]) == ("/v1/embeddings", "Bearer sk-upstream")
    assert json.loads(fake.last.body)["model"] == "text-embedding-3-small"


async def test_completions_plain_and_streamed(sdk) -> None:
    client, fake, _ = sdk
    plain = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hello")
    assert plain.choices[0].text == " world"
    stream = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hello", stream=True)
    assert [chunk.choices[0].text async for chunk in stream] == [" wor", "ld"]
    assert fake.last.path == "/v1/completions"


async def test_moderations_images_and_rerank(sdk) -> None:
    client, fake, gateway = sdk
    moderation = await client.moderations.create(model="omni-moderation-latest", input="hi")
    assert moderation.results[0].flagged is False
    image = await client.images.generate(model="dall-e-3", prompt="a cat")
    assert image.data and image.data[0].b64_json == "iVBORw0KGgo="
    assert fake.last.path == "/v1/images/generations"
    reranked = await gateway.post("/v1/rerank", json={"model": "openai/rerank-v3", "query": "q", "documents": ["a"]})
    assert (reranked.status, await reranked.json()) == (200, {"results": [{"index": 1, "relevance_score": 0.9}]})


async def test_speech_is_relayed_as_bytes_with_its_content_type(sdk, tmp_path: Path) -> None:
    client, _, _ = sdk
    target = tmp_path / "speech.mp3"
    async with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="hi") as out:
        assert out.headers["content-type"] == "audio/mpeg"
        await out.stream_to_file(target)
    assert target.read_bytes() == AUDIO


async def test_a_provider_without_the_endpoint_is_refused_naming_what_it_serves(sdk) -> None:
    client, fake, _ = sdk
    before = len(fake.requests)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.embeddings.create(model="other/e5", input="hello")
    assert caught.value.body == {
        "message": "provider 'other' does not serve embeddings; it serves: chat, models",
        "type": "no_provider",
        "code": "no_provider",
    }
    assert len(fake.requests) == before
