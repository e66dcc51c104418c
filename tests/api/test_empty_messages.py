"""Chat messages without content are dropped before the request is forwarded (seed 000's API ignores them; several
providers refuse them with a 400); the body is re-encoded only when one is dropped, and a table entry turns it off."""

from __future__ import annotations

import json

import pytest

from gateway.dialects.openai import without_empty_messages
from gateway.errors import InvalidRequest
from tests.fakes.bodies import CHAT
from tests.fakes.tables import entry

USER = {"role": "user", "content": "hi"}
FUNCTION = {"name": "f", "arguments": "{}"}
CALL = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": FUNCTION}]}
TOOL_EMPTY = {"role": "tool", "tool_call_id": "c1", "content": ""}


@pytest.mark.parametrize(
    ("messages", "kept"),
    [
        ([USER], None),
        ([{"role": "system", "content": ""}, USER], [USER]),
        ([USER, {"role": "assistant", "content": None}], [USER]),
        ([USER, {"role": "assistant"}], [USER]),
        ([{"role": "user", "content": []}, USER], [USER]),
        ([USER, CALL, TOOL_EMPTY], None),  # a tool call and its (empty) answer stay
        ([USER, {"role": "assistant", "content": None, "refusal": "no"}], None),
        ([USER, {"role": "user", "content": [{"type": "text", "text": ""}]}], None),  # a part is content
        ([USER, {"role": "user", "content": " "}], None),
    ],
)
def test_which_messages_are_empty(messages, kept) -> None:
    assert without_empty_messages(messages) == kept


def test_nothing_left_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        without_empty_messages([{"role": "user", "content": ""}, {"role": "assistant", "content": None}])
    assert (caught.value.status, caught.value.code) == (400, "invalid_messages")


async def test_empty_messages_are_dropped_before_forwarding(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url))
    empty = [{"role": "system", "content": ""}, {"role": "assistant", "content": []}]
    sent = {"model": "p/m", "messages": [empty[0], USER, empty[1]]}
    response = await client.post(CHAT, json=sent)
    assert response.status == 200
    assert json.loads(fake.last.body) == {"model": "m", "messages": [USER]}


async def test_a_body_without_empty_messages_passes_byte_for_byte(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url, model_prefixes=["m"]))
    raw = b'{ "model":"m",  "messages":[{"role":"user","content":"hi"}],"x":1.50}'
    response = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert fake.last.body == raw


async def test_a_provider_entry_turns_the_drop_off(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url, model_prefixes=["m"], drop_empty_messages=False))
    raw = b'{"model":"m","messages":[{"role":"system","content":""},{"role":"user","content":"hi"}]}'
    response = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert fake.last.body == raw


async def test_only_empty_messages_is_a_400_in_openai_shape(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json={"model": "p/m", "messages": [{"role": "user", "content": ""}]})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_messages"
    assert fake.requests == []
