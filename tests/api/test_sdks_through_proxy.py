"""The official SDKs through `/proxy/{provider}` with the base_url the docs give: the SDK's own version segment
and the table URL's are taken once (`/proxy/anthropic/v1/messages` reaches `https://.../v1/messages`)."""

from __future__ import annotations

import anthropic
import openai
from aiohttp import web

from tests.fakes.bodies import chat_answer
from tests.fakes.tables import entry

MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-gateway-test",
    "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}  # fmt: skip


async def _message(request: web.Request) -> web.Response:
    return web.json_response(MESSAGE)


async def _chat(request: web.Request) -> web.Response:
    return web.json_response(chat_answer(content="Hi"))


async def test_the_anthropic_sdk_through_proxy(fake_provider, gateway) -> None:
    fake = await fake_provider({"/v1/messages": _message})
    anthropic_entry = entry("anthropic", fake.url + "/v1", "xheader", headers={"anthropic-version": "2023-06-01"})
    client = await gateway(anthropic_entry, env={"ANTHROPIC_API_KEY": "sk-ant-upstream"})
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("/proxy/anthropic")), api_key="client-key", max_retries=0, timeout=10
    ) as sdk:
        message = await sdk.messages.create(
            model="claude-gateway-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "Hello"  # type: ignore[union-attr]
    assert fake.last.path == "/v1/messages"
    assert fake.last.headers["x-api-key"] == "sk-ant-upstream"


async def test_the_openai_sdk_through_proxy(fake_provider, gateway) -> None:
    fake = await fake_provider({"/v1/chat/completions": _chat})
    client = await gateway(entry("openai", fake.url + "/v1", "bearer"), env={"OPENAI_API_KEY": "sk-upstream"})
    # OpenAI's SDK takes the version in its base_url: both spellings reach the same place.
    for base in ("/proxy/openai", "/proxy/openai/v1"):
        async with openai.AsyncOpenAI(
            base_url=str(client.make_url(base)), api_key="client-key", max_retries=0, timeout=10
        ) as sdk:
            answer = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "Hi"
        assert fake.last.path == "/v1/chat/completions"
