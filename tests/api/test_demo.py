"""The offline demo behind `make run` serves every endpoint the gateway routes, through the gateway, with the
demo's own table (config/demo.providers.yaml)."""

from __future__ import annotations

import base64
from pathlib import Path

import anthropic
import openai
import pytest

from gateway.app import create_app
from gateway.config.providers import load_table
from gateway.config.settings import Settings
from gateway.demo import PNG, STORY, create_demo_app, usage

ROOT = Path(__file__).resolve().parents[2]


async def test_every_route_works_against_the_demo(aiohttp_server, aiohttp_client, tmp_path: Path) -> None:
    demo = await aiohttp_server(create_demo_app())
    env = {"DEMO_API_URL": str(demo.make_url("/v1"))}
    gateway = await aiohttp_client(
        create_app(Settings.from_env(env), load_table(ROOT / "config/demo.providers.yaml", env))
    )
    async with openai.AsyncOpenAI(
        base_url=str(gateway.make_url("/v1")), api_key="unused", max_retries=0, timeout=10
    ) as client:
        chat = await client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content == "You said: hi"
        first = await client.embeddings.create(model="demo-embed", input="hello")
        again = await client.embeddings.create(model="demo-embed", input="hello")
        assert first.data[0].embedding == again.data[0].embedding and len(first.data[0].embedding) == 8
        text = await client.completions.create(model="demo-story", prompt="once")
        assert text.choices[0].text.startswith("Once upon a time")
        stream = await client.completions.create(model="demo-echo", prompt="hi", stream=True)
        assert "".join([chunk.choices[0].text async for chunk in stream]).strip() == "You wrote: hi"
        assert (await client.moderations.create(model="demo-mod", input="hi")).results[0].flagged is False
        image = await client.images.generate(model="demo-image", prompt="a dot")
        assert image.data and image.data[0].b64_json is not None
        assert base64.b64decode(image.data[0].b64_json) == PNG
        target = tmp_path / "hello.wav"
        async with client.audio.speech.with_streaming_response.create(
            model="demo-tts", voice="alloy", input="hello"
        ) as out:
            await out.stream_to_file(target)
        assert target.read_bytes()[:4] == b"RIFF" and target.read_bytes()[8:12] == b"WAVE"
        wav = target.read_bytes()
        heard = f"heard {len(wav)} bytes of hello.wav"
        transcript = await client.audio.transcriptions.create(model="demo/demo-whisper", file=target)
        assert transcript.text == heard
        srt = await client.audio.transcriptions.create(model="demo-whisper", file=target, response_format="srt")
        assert srt == f"1\n00:00:00,000 --> 00:00:01,000\n{heard}\n"
        events = await client.audio.transcriptions.create(model="demo-whisper", file=target, stream=True)
        assert [e.text async for e in events if e.type == "transcript.text.done"] == [heard]
        edited = await client.images.edit(model="demo-image", image=("dot.png", PNG, "image/png"), prompt="a hat")
        assert edited.data and base64.b64decode(edited.data[0].b64_json or "") == PNG
    reranked = await gateway.post(
        "/v1/rerank", json={"model": "demo-rerank", "query": "red apple", "documents": ["blue sky", "red apple pie"]}
    )
    assert (await reranked.json())["results"][0] == {"index": 1, "relevance_score": 1.0}


async def test_the_demo_answers_the_responses_and_messages_apis(aiohttp_server, aiohttp_client) -> None:
    demo = await aiohttp_server(create_demo_app())
    env = {"DEMO_API_URL": str(demo.make_url("/v1"))}
    gateway = await aiohttp_client(
        create_app(Settings.from_env(env), load_table(ROOT / "config/demo.providers.yaml", env))
    )
    async with openai.AsyncOpenAI(
        base_url=str(gateway.make_url("/v1")), api_key="unused", max_retries=0, timeout=10
    ) as client:
        made = await client.responses.create(model="demo-echo", input="hello")
        assert made.output_text == "You said: hello"
        stream = await client.responses.create(model="demo-story", input="a story", stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == STORY
        again = await client.responses.retrieve(made.id)
        assert again.output_text == "You said: hello"
        items = await client.responses.input_items.list(made.id)
        assert [item.type for item in items.data] == ["message"]
        follow = await client.responses.create(model="demo-echo", input="more", previous_response_id=made.id)
        assert follow.previous_response_id == made.id
        await client.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(made.id)
    async with anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key="unused", max_retries=0, timeout=10
    ) as claude:
        message = await claude.messages.create(
            model="demo-echo", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "You said: hello"
        async with claude.messages.stream(
            model="demo-story", max_tokens=50, messages=[{"role": "user", "content": "a story"}]
        ) as streamed:
            assert await streamed.get_final_text() == STORY
        counted = await claude.messages.count_tokens(
            model="demo-echo", messages=[{"role": "user", "content": "how many tokens"}]
        )
        assert counted.input_tokens == 3


def test_the_printed_commands_include_both_apis() -> None:
    printed = usage("http://127.0.0.1:8080")
    assert "curl -sN http://127.0.0.1:8080/v1/responses" in printed
    assert "curl -sN http://127.0.0.1:8080/v1/messages" in printed
    assert "curl -s http://127.0.0.1:8080/v1/messages/count_tokens" in printed
