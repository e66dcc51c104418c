"""The official OpenAI SDK, pointed at the gateway, lists models, chats and streams."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from aiohttp import web

from tests.fakes.bodies import chat_answer
from tests.fakes.tables import entry

CHUNKS = [
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
]  # fmt: skip


async def provider_stream(request: web.Request) -> web.StreamResponse:
    body = json.loads(await request.read())
    if not body.get("stream"):
        return web.json_response(chat_answer(model=body["model"], content="Hello"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in CHUNKS:
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(0.01)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture
async def sdk(gateway, fake_provider):
    fake = await fake_provider(
        {
            "/v1/chat/completions": provider_stream,
            "/v1/models": lambda r: _models(),
        }
    )
    client = await gateway(entry("openai", fake.url + "/v1", "bearer", model_prefixes=["gpt-"]),
                           env={"OPENAI_API_KEY": "sk-upstream"})  # fmt: skip
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="client-key", max_retries=0, timeout=10
    ) as sdk_client:
        yield sdk_client, fake


async def _models() -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 5,
                                                          "owned_by": "openai"}]})  # fmt: skip


async def test_models_list(sdk) -> None:
    client, _ = sdk
    models = [m async for m in client.models.list()]
    assert [(m.id, m.owned_by, m.created) for m in models] == [("openai/gpt-4o", "openai", 5)]
    # A chat-only provider's models are LLMs: the table infers it from the endpoints it declares.
    assert models[0].model_extra == {
        "served_by": "openai",
        "service_type": "llm",
        "input_modalities": ["text"],
        "output_modalities": ["text"],
    }


async def test_chat_completion(sdk) -> None:
    client, fake = sdk
    completion = await client.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Hello"
    assert completion.usage is not None and completion.usage.total_tokens == 5
    assert json.loads(fake.last.body)["model"] == "gpt-4o"
    assert fake.last.headers["Authorization"] == "Bearer sk-upstream"


async def test_streaming_chat(sdk) -> None:
    client, _ = sdk
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "Hello"


async def test_errors_arrive_as_sdk_exceptions(sdk) -> None:
    client, _ = sdk
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="mystery", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "no_provider"
    assert caught.value.type == "no_provider"


async def test_models_retrieve(sdk) -> None:
    client, _ = sdk
    for model_id in ("openai/gpt-4o", "gpt-4o"):
        model = await client.models.retrieve(model_id)
        assert (model.id, model.owned_by, model.created) == ("openai/gpt-4o", "openai", 5)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("openai/gpt-nope")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["message"] == "The model 'openai/gpt-nope' does not exist or you do not have access to it."
