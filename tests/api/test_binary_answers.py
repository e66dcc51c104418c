"""Binary answers (speech audio, images as bytes) are relayed as they arrive, with the provider's content type
and length, bytes intact (checked by checksum), through the official SDK's streaming response."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.fakes.tables import entry
from tests.fakes.uploads import UPLOAD_ENDPOINTS, sha

AUDIO = bytes(range(256)) * 4096  # 1 MiB
PNG = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 512
IMAGES = {"name": "images_generations", "method": "POST", "endpoint": "/images/generations"}


def audio_with_length(first_sent: asyncio.Event, go_on: asyncio.Event):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(AUDIO)
        await response.prepare(request)
        await response.write(AUDIO[:65536])
        first_sent.set()
        await asyncio.wait_for(go_on.wait(), 10)  # the rest only once the client holds the first part
        for start in range(65536, len(AUDIO), 65536):
            await response.write(AUDIO[start : start + 65536])
        await response.write_eof()
        return response

    return handler


async def png(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def sdk(gateway, fake_provider):
    first_sent, go_on = asyncio.Event(), asyncio.Event()
    fake = await fake_provider(
        {"/v1/audio/speech": audio_with_length(first_sent, go_on), "/v1/images/generations": png}
    )
    provider = entry("openai", fake.url + "/v1", "bearer", model_prefixes=["tts-", "img-"])
    provider["endpoints"].update(UPLOAD_ENDPOINTS, images_generations=IMAGES)
    client = await gateway(provider, env={"OPENAI_API_KEY": "sk-upstream"})
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="client-key", max_retries=0, timeout=10
    ) as sdk_client:
        yield sdk_client, client, (first_sent, go_on)


async def test_speech_streams_to_a_file_with_its_type_and_length(sdk, tmp_path: Path) -> None:
    client, _, (_, go_on) = sdk
    target = tmp_path / "speech.wav"
    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hello", response_format="wav"
    ) as out:
        assert (out.headers["content-type"], out.headers["content-length"]) == ("audio/wav", str(len(AUDIO)))
        pieces = out.iter_bytes()
        first = await anext(pieces)  # arrives while the provider still holds the rest
        go_on.set()
        with target.open("wb") as file:
            file.write(first)
            async for piece in pieces:
                file.write(piece)
    assert sha(target.read_bytes()) == sha(AUDIO)


async def test_an_image_answered_as_bytes_is_relayed_as_bytes(sdk) -> None:
    _, gateway, _ = sdk
    response = await gateway.post("/v1/images/generations", json={"model": "img-1", "prompt": "a cat"})
    assert response.status == 200
    assert (response.headers["Content-Type"], response.headers["Content-Length"]) == ("image/png", str(len(PNG)))
    assert sha(await response.read()) == sha(PNG)
