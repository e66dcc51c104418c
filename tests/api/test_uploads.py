"""Multipart uploads (image edits and variations, transcriptions, translations) through the official SDK, and as
raw bytes: routed by their `model` field, relayed as they arrive with only that part rewritten, checked byte for
byte (checksums) at the provider; the size limit, chunked bodies included, and the table's per-endpoint limits."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.fakes.tables import entry, table_of
from tests.fakes.uploads import (
    SRT,
    STREAM_EVENTS,
    TEXT,
    UPLOAD_ENDPOINTS,
    VERBOSE,
    VTT,
    content_type,
    editing,
    form,
    parts_of,
    sha,
    transcribing,
)

AUDIO = bytes(range(256)) * 1024  # 256 KiB, every byte value, CRLFs and dashes included
PNG = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 64
TRANSCRIPTIONS = "/v1/audio/transcriptions"


def provider_entry(url: str, **extra) -> dict:
    provider = entry("openai", url + "/v1", "bearer", model_prefixes=["whisper-", "gpt-image", "dall-e"], **extra)
    provider["endpoints"].update(UPLOAD_ENDPOINTS)
    return provider


@pytest.fixture
async def sdk(gateway, fake_provider):
    fake = await fake_provider(
        {
            "/v1/audio/transcriptions": transcribing,
            "/v1/audio/translations": transcribing,
            "/v1/images/edits": editing,
            "/v1/images/variations": editing,
        }
    )
    chat_only = entry("other", fake.url + "/v1", model_prefixes=["other-"])
    client = await gateway(provider_entry(fake.url), chat_only, env={"OPENAI_API_KEY": "sk-upstream"})
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="client-key", max_retries=0, timeout=10
    ) as sdk_client:
        yield sdk_client, fake, client


async def test_images_edit_with_a_file(sdk) -> None:
    client, fake, _ = sdk
    result = await client.images.edit(
        model="openai/gpt-image-1", image=("cat.png", PNG, "image/png"), prompt="add a hat"
    )
    assert result.data and result.data[0].b64_json == sha(PNG)
    seen = fake.last
    assert (seen.path, seen.headers["Authorization"]) == ("/v1/images/edits", "Bearer sk-upstream")
    fields = {
        name: value for name, filename, value in parts_of(seen.body, seen.headers["Content-Type"]) if not filename
    }
    assert fields == {"model": b"gpt-image-1", "prompt": b"add a hat"}


async def test_images_variation_with_a_file(sdk, tmp_path: Path) -> None:
    client, fake, _ = sdk
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    with pytest.deprecated_call():  # the SDK marks variations deprecated; the endpoint still serves dall-e-2
        result = await client.images.create_variation(model="dall-e-2", image=path)
    assert result.data and result.data[0].b64_json == sha(PNG)
    assert fake.last.path == "/v1/images/variations"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [("json", TEXT), ("text", TEXT), ("srt", SRT), ("vtt", VTT), ("verbose_json", TEXT)],
)
async def test_transcriptions_in_every_response_format(sdk, response_format, expected) -> None:
    client, fake, _ = sdk
    raw = await client.audio.transcriptions.with_raw_response.create(
        model="openai/whisper-1", file=("speech.wav", AUDIO, "audio/wav"), response_format=response_format
    )
    assert (raw.headers["x-file-sha256"], raw.headers["x-file-size"]) == (sha(AUDIO), str(len(AUDIO)))
    assert raw.headers["x-model"] == "whisper-1"
    result = raw.parse()
    text = result if isinstance(result, str) else result.text
    assert text.strip() == expected.strip()
    if response_format == "verbose_json":
        assert json.loads(raw.content) == VERBOSE
    assert fake.last.path == TRANSCRIPTIONS


async def test_translations_with_a_file(sdk) -> None:
    client, fake, _ = sdk
    with pytest.deprecated_call():  # this SDK marks translations deprecated; the endpoint still serves whisper-1
        result = await client.audio.translations.create(model="whisper-1", file=("speech.wav", AUDIO, "audio/wav"))
    assert result.text == TEXT
    assert fake.last.path == "/v1/audio/translations"
    files = [value for _, filename, value in parts_of(fake.last.body, fake.last.headers["Content-Type"]) if filename]
    assert files == [AUDIO]


async def test_streamed_transcription_events_are_relayed(sdk) -> None:
    client, _, _ = sdk
    stream = await client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", AUDIO, "audio/wav"), stream=True
    )
    events = [event.model_dump(exclude_none=True) async for event in stream]
    assert events == list(STREAM_EVENTS)


async def test_the_body_reaches_the_provider_byte_for_byte_with_only_the_model_rewritten(sdk) -> None:
    _, fake, gateway = sdk
    sent = form(("model", b"openai/whisper-1", None), ("language", b"en", None), ("file", AUDIO, "a.wav"))
    response = await gateway.post(TRANSCRIPTIONS, data=sent, headers={"Content-Type": content_type()})
    assert response.status == 200
    assert fake.last.body == sent.replace(b"openai/whisper-1", b"whisper-1", 1)
    assert fake.last.headers["Content-Length"] == str(len(sent) - len(b"openai/"))
    assert fake.last.headers["Content-Type"] == content_type()


async def test_a_model_that_needs_no_change_passes_untouched_and_the_provider_part_is_taken_out(sdk) -> None:
    _, fake, gateway = sdk
    sent = form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    response = await gateway.post(TRANSCRIPTIONS, data=sent, headers={"Content-Type": content_type()})
    assert response.status == 200
    assert fake.last.body == sent
    named = form(("provider", b"openai", None), ("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    response = await gateway.post(TRANSCRIPTIONS, data=named, headers={"Content-Type": content_type()})
    assert response.status == 200
    assert fake.last.body == sent


async def test_a_chunked_upload_is_relayed_chunked(sdk) -> None:
    _, fake, gateway = sdk
    sent = form(("model", b"openai/whisper-1", None), ("file", AUDIO, "a.wav"))

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(sent), 10_000):
            yield sent[start : start + 10_000]

    response = await gateway.post(TRANSCRIPTIONS, data=pieces(), headers={"Content-Type": content_type()})
    assert response.status == 200
    assert fake.last.body == sent.replace(b"openai/whisper-1", b"whisper-1", 1)
    assert fake.last.headers["Transfer-Encoding"] == "chunked"


async def test_a_file_before_the_model_is_held_then_relayed_whole(sdk) -> None:
    _, fake, gateway = sdk
    sent = form(("file", AUDIO, "a.wav"), ("model", b"openai/whisper-1", None), ("language", b"en", None))
    response = await gateway.post(TRANSCRIPTIONS, data=sent, headers={"Content-Type": content_type()})
    assert response.status == 200
    assert fake.last.body == sent.replace(b"openai/whisper-1", b"whisper-1", 1)


@pytest.mark.parametrize(
    ("body", "kind", "status", "code"),
    [
        (form(("file", AUDIO, "a.wav")), content_type(), 400, "invalid_model"),
        (form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"), ("model", b"x", None)), content_type(),
         400, "duplicate_key"),
        (form(("model", b"whisper-1", None), ("model", b"x", None), ("file", AUDIO, "a.wav")), content_type(),
         400, "duplicate_key"),
        (form(("model", b"whisper-1", None), ("language", b"en", None))[:-30], content_type(), 400,
         "invalid_multipart"),
        (b"no boundary here", content_type(), 400, "invalid_multipart"),
        (b'{"model": "whisper-1"}', "application/json", 400, "invalid_content_type"),
        (form(("model", b"whisper-1", None)), "multipart/form-data", 400, "invalid_content_type"),
        (form(("model", b"other-1", None), ("file", AUDIO, "a.wav")), content_type(), 404, "no_provider"),
    ],
)  # fmt: skip
async def test_bad_uploads_get_an_openai_error(sdk, body, kind, status, code) -> None:
    _, fake, gateway = sdk
    response = await gateway.post(TRANSCRIPTIONS, data=body, headers={"Content-Type": kind})
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_the_upload_streams_to_the_provider_before_the_client_has_sent_it_all(gateway, fake_provider) -> None:
    head_arrived = asyncio.Event()
    received: list[bytes] = []

    async def reading(request: web.Request) -> web.StreamResponse:
        async for piece in request.content.iter_any():
            received.append(piece)
            if b"FIRST-HALF" in b"".join(received):
                head_arrived.set()
        return web.json_response({"text": "ok"})

    fake = await fake_provider({"/v1/audio/transcriptions": reading})
    fake.record = False
    client = await gateway(provider_entry(fake.url), env={"OPENAI_API_KEY": "k"})
    first = form(("model", b"whisper-1", None), ("file", b"FIRST-HALF" + AUDIO + b"SECOND-HALF", "a.wav"))
    cut = first.index(b"SECOND-HALF")

    async def pieces() -> AsyncIterator[bytes]:
        yield first[:cut]
        # The rest is sent only once the provider holds the first half: the gateway never waits for the whole.
        await asyncio.wait_for(head_arrived.wait(), 10)
        yield first[cut:]

    response = await client.post(TRANSCRIPTIONS, data=pieces(), headers={"Content-Type": content_type()})
    assert (response.status, await response.json()) == (200, {"text": "ok"})
    assert b"".join(received) == first


async def test_an_upload_over_the_limit_is_413_before_it_is_read(gateway, fake_provider) -> None:
    fake = await fake_provider({"/v1/audio/transcriptions": transcribing})
    client = await gateway(
        provider_entry(fake.url), env={"OPENAI_API_KEY": "k", "SERVER_MAX_REQUEST_BODY_SIZE": "100000"}
    )
    sent = form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    response = await client.post(TRANSCRIPTIONS, data=sent, headers={"Content-Type": content_type()})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"
    assert fake.requests == []


async def test_a_chunked_upload_over_the_limit_is_413_and_never_reaches_the_provider_whole(
    gateway, fake_provider
) -> None:
    fake = await fake_provider({"/v1/audio/transcriptions": transcribing})
    client = await gateway(
        provider_entry(fake.url), env={"OPENAI_API_KEY": "k", "SERVER_MAX_REQUEST_BODY_SIZE": "100000"}
    )
    sent = form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(sent), 8192):
            yield sent[start : start + 8192]

    response = await client.post(TRANSCRIPTIONS, data=pieces(), headers={"Content-Type": content_type()})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"
    # The provider got a cut connection, never a whole request it could act on.
    assert fake.requests == []


async def test_the_tables_body_limit_for_an_endpoint_replaces_the_setting_there_only(gateway, fake_provider) -> None:
    fake = await fake_provider({"/v1/audio/transcriptions": transcribing})
    limits = {"audio_transcriptions": 1_000_000}
    table = table_of(provider_entry(fake.url), env={"OPENAI_API_KEY": "k"}, body_limits=limits)
    client = await gateway(table=table, env={"SERVER_MAX_REQUEST_BODY_SIZE": "100000"})
    sent = form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    response = await client.post(TRANSCRIPTIONS, data=sent, headers={"Content-Type": content_type()})
    assert response.status == 200
    assert response.headers["X-File-Sha256"] == sha(AUDIO)
    translated = await client.post("/v1/audio/translations", data=sent, headers={"Content-Type": content_type()})
    assert translated.status == 413


async def test_a_streamed_upload_is_not_sent_again_after_a_503(gateway, fake_provider) -> None:
    calls = []

    async def busy(request: web.Request) -> web.StreamResponse:
        calls.append(await request.read())
        return web.json_response({"error": {"message": "busy"}}, status=503, headers={"Retry-After": "0"})

    fake = await fake_provider({"/v1/audio/transcriptions": busy})
    client = await gateway(provider_entry(fake.url, retries={"max_retries": 3}), env={"OPENAI_API_KEY": "k"})
    sent = form(("model", b"whisper-1", None), ("file", AUDIO, "a.wav"))
    response = await client.post(TRANSCRIPTIONS, data=io.BytesIO(sent), headers={"Content-Type": content_type()})
    assert response.status == 503
    assert (await response.json()) == {"error": {"message": "busy"}}
    assert calls == [sent]
