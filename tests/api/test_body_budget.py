"""The memory all request bodies in flight may take together (SERVER_MAX_BODY_MEMORY): bytes read plus an estimate
of what parsing builds. Past it a request gets 503 server_busy with Retry-After, before its body is parsed (or
read, when it announces its size); every request gives its share back when it ends, whatever its outcome."""

from __future__ import annotations

import pytest

from gateway.api.inbound import BODY_BUDGET, PARSED_PER_CONTAINER, BodyBudget
from gateway.errors import ServerBusy
from tests.fakes.bodies import CHAT, chat
from tests.fakes.tables import entry

LIMIT = 4000


def test_a_share_is_taken_and_given_back_whole() -> None:
    budget = BodyBudget(100)
    first, second = budget.hold(), budget.hold()
    first.take(60)
    with pytest.raises(ServerBusy) as caught:
        second.take(41)
    assert (caught.value.status, caught.value.code, caught.value.headers) == (503, "server_busy", {"Retry-After": "1"})
    second.take(40)
    assert budget.used == 100
    first.release()
    second.release()
    assert budget.used == 0
    unlimited = BodyBudget(0).hold()
    unlimited.take(10**12)
    nested = BodyBudget(10**6).hold()
    nested.take_parse(b'[{},{},{"a":[1]}]')
    assert nested.size == 2 * 17 + 5 * PARSED_PER_CONTAINER


async def test_bodies_past_the_budget_get_503_and_every_share_comes_back(fake_provider, gateway) -> None:
    fake = await fake_provider()
    client = await gateway(entry("p", fake.url), env={"SERVER_MAX_BODY_MEMORY": str(LIMIT)})
    budget = client.app[BODY_BUDGET]
    assert (await client.post(CHAT, json=chat())).status == 200
    big = chat(messages=[{"role": "user", "content": "x" * LIMIT}])
    # Few bytes, many objects: what parsing would build counts, not only the bytes.
    many = chat(messages=[{"role": "user", "content": "hi"}] + [{}] * (LIMIT // PARSED_PER_CONTAINER))
    for body in (big, many):
        response = await client.post(CHAT, json=body)
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert response.headers["x-should-retry"] == "true"
        assert (await response.json())["error"]["code"] == "server_busy"
    assert (await client.post(CHAT, data=b"{", headers={"Content-Type": "application/json"})).status == 400
    assert (await client.post("/proxy/p/files", data=b"x" * 100)).status == 200
    assert budget.used == 0
    assert len(fake.requests) == 2
