"""The bytes a provider receives mean exactly what the gateway checked: a body that repeats a key (orjson keeps the
last, a provider's parser may keep the first) is refused, so a policy or the vision check cannot be passed with one
reading while the provider acts on another. Ordinary bodies still go through byte for byte."""

from __future__ import annotations

import orjson

from tests.fakes.bodies import CHAT
from tests.fakes.tables import entry

BYPASS = b'{"model":"p/o1-pro","model":"p/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
HIDDEN_IMAGE = (
    b'{"model":"p/m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:,"}}]}],'
    b'"messages":[{"role":"user","content":"hi"}]}'
)


async def test_a_repeated_key_is_refused_before_any_provider_sees_it(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url), env={"ALLOWED_MODELS": "p/gpt-4o-mini"})
    for raw, key in ((BYPASS, "model"), (HIDDEN_IMAGE, "messages")):
        response = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert await response.json() == {
            "error": {
                "message": f"the request body repeats the key {key!r}; send each key once",
                "type": "invalid_request_error",
                "code": "duplicate_key",
            }
        }
    assert fake.requests == []
    ordinary = b'{"model": "p/gpt-4o-mini", "messages": [{"role": "user", "content": "say \\"model\\": 1"}]}'
    assert (await client.post(CHAT, data=ordinary, headers={"Content-Type": "application/json"})).status == 200
    assert orjson.loads(fake.last.body) == {**orjson.loads(ordinary), "model": "gpt-4o-mini"}
