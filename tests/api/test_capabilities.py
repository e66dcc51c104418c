"""Model capabilities on /v1/models (and /v1/models/{id}), the ?service_type= filter, and routing by service type:
a request goes only to a model of the type its endpoint needs, where the table knows the model's type."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.providers import answering
from tests.fakes.tables import entry, table_of
from tests.fakes.uploads import UPLOAD_ENDPOINTS, content_type, form, transcribing

LISTED = {
    "object": "list",
    "data": [
        {"id": m, "object": "model", "created": 1, "owned_by": "openai"}
        for m in ("gpt-4o", "whisper-1", "tts-1", "text-embedding-3-small", "mystery")
    ],
}
MODELS = [
    {"id": "gpt-4o*", "service_type": "llm", "input_modalities": ["text", "image"],
     "supported_features": ["tools", "vision", "json_schema", "streaming"], "context_window": 128000},
    {"id": "whisper-*", "service_type": "stt"},
    {"id": "tts-*", "service_type": "tts"},
    {"id": "text-embedding-*", "service_type": "embedding"},
]  # fmt: skip
EMBEDDINGS = {"name": "embeddings", "method": "POST", "endpoint": "/embeddings"}


@pytest.fixture
async def gateway_of(gateway, fake_provider):
    fake = await fake_provider(
        {
            "/v1/models": answering(LISTED),
            "/v1/audio/transcriptions": transcribing,
            "/v1/embeddings": answering({"object": "list", "data": []}),
        }
    )
    provider = entry("openai", fake.url + "/v1", "bearer", models=MODELS, model_prefixes=["gpt-", "whisper-", "tts-"])
    provider["endpoints"].update(UPLOAD_ENDPOINTS, embeddings=EMBEDDINGS)
    env = {"OPENAI_API_KEY": "sk-upstream"}
    groups = {"speaker": {"deployments": [{"provider": "openai", "model": "tts-1"}]}}
    client = await gateway(table=table_of(provider, env=env, models=groups), env=env)
    return client, fake


async def test_models_carry_what_the_table_knows_and_nothing_guessed(gateway_of) -> None:
    client, _ = gateway_of
    listed = (await (await client.get("/v1/models")).json())["data"]
    by_id = {model["id"]: model for model in listed}
    assert by_id["openai/gpt-4o"] == {
        "id": "openai/gpt-4o", "object": "model", "created": 1, "owned_by": "openai", "served_by": "openai",
        "service_type": "llm", "input_modalities": ["text", "image"], "output_modalities": ["text"],
        "supported_features": ["tools", "vision", "json_schema", "streaming"], "context_window": 128000,
    }  # fmt: skip
    assert {k: by_id["openai/whisper-1"][k] for k in ("service_type", "input_modalities", "output_modalities")} == {
        "service_type": "stt",
        "input_modalities": ["audio"],
        "output_modalities": ["text"],
    }
    # The provider serves several types and the table says nothing of this one: unknown, not guessed.
    assert by_id["openai/mystery"] == {
        "id": "openai/mystery", "object": "model", "created": 1, "owned_by": "openai", "served_by": "openai",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("service_type", "ids"),
    [
        ("llm", ["openai/gpt-4o"]),
        ("stt", ["openai/whisper-1"]),
        ("tts", ["speaker", "openai/tts-1"]),  # the group of a TTS model is a TTS model
        ("embedding", ["openai/text-embedding-3-small"]),
        ("rerank", []),
    ],
)
async def test_the_service_type_filter(gateway_of, service_type, ids) -> None:
    client, _ = gateway_of
    response = await client.get(f"/v1/models?service_type={service_type}")
    assert [model["id"] for model in (await response.json())["data"]] == ids


async def test_an_unknown_service_type_is_a_400(gateway_of) -> None:
    client, _ = gateway_of
    response = await client.get("/v1/models?service_type=video")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_service_type"


async def test_retrieve_answers_one_model_with_its_capabilities(gateway_of) -> None:
    client, _ = gateway_of
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0) as sdk:
        model = await sdk.models.retrieve("openai/whisper-1")
    assert model.id == "openai/whisper-1"
    assert model.model_extra == {
        "served_by": "openai",
        "service_type": "stt",
        "input_modalities": ["audio"],
        "output_modalities": ["text"],
    }


async def test_a_transcription_sent_to_a_chat_model_is_a_404_naming_both_types(gateway_of) -> None:
    client, fake = gateway_of
    before = len(fake.requests)
    sent = form(("model", b"openai/gpt-4o", None), ("file", b"RIFF....", "a.wav"))
    response = await client.post("/v1/audio/transcriptions", data=sent, headers={"Content-Type": content_type()})
    assert response.status == 404
    assert await response.json() == {
        "error": {
            "message": "model 'gpt-4o' of provider 'openai' is of service type llm; "
            "audio_transcriptions needs service type stt",
            "type": "no_provider",
            "code": "no_provider",
        }
    }
    assert len(fake.requests) == before


async def test_an_embedding_sent_to_a_tts_model_is_a_404(gateway_of) -> None:
    client, fake = gateway_of
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.embeddings.create(model="tts-1", input="hello")
    assert caught.value.body == {
        "message": "model 'tts-1' of provider 'openai' is of service type tts; embeddings needs service type embedding",
        "type": "no_provider",
        "code": "no_provider",
    }
    assert not any(seen.path == "/v1/embeddings" for seen in fake.requests)


async def test_a_model_group_skips_deployments_of_the_wrong_type(gateway_of) -> None:
    client, _ = gateway_of
    response = await client.post("/v1/embeddings", json={"model": "speaker", "input": "x"})
    assert response.status == 404
    assert (await response.json())["error"]["message"] == (
        "no provider of model 'speaker' serves embeddings: model 'tts-1' of provider 'openai' is of service type tts; "
        "embeddings needs service type embedding"
    )


async def test_matching_and_unknown_types_go_through(gateway_of) -> None:
    client, fake = gateway_of
    sent = form(("model", b"whisper-1", None), ("file", b"RIFF....", "a.wav"))
    response = await client.post("/v1/audio/transcriptions", data=sent, headers={"Content-Type": content_type()})
    assert response.status == 200
    unknown = await client.post("/v1/embeddings", json={"model": "openai/mystery", "input": "x"})
    assert unknown.status == 200
    assert fake.last.path == "/v1/embeddings"
