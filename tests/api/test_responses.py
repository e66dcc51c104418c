"""OpenAI's Responses API through the gateway: the official `openai` SDK (unchanged but for its base URL) against
two fake providers on 127.0.0.1. A response's follow-ups (retrieve, delete, input items, cancel) and a new request
that continues it go to the provider that made it; ids the gateway does not know are a clear 404 unless the client
names the provider; another client's ids are not reachable; bytes and streams pass unchanged; usage is counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.config.settings import Settings
from gateway.runtime.state import STATE
from tests.fakes.access import write_keys
from tests.fakes.gateways import Gateway, auth_settings, start_gateway, telemetry_settings
from tests.fakes.native import ResponsesProvider, response_events
from tests.fakes.tables import entry, serving, table_of
from tests.fakes.telemetry import samples

NOT_FOUND = {
    "error": {
        "message": "response 'resp_elsewhere' is unknown to this gateway (not made through it, or forgotten); name the "
        "provider that made it with ?provider=",
        "type": "invalid_request_error",
        "code": "response_not_found",
    }
}


def two_providers(a: ResponsesProvider, b: ResponsesProvider) -> Any:
    """`a` serves the `shared` and `a-` models, `b` the `b-` ones and the `held` stream."""
    return table_of(
        serving(entry("a", a.url + "/v1", model_prefixes=["a-", "shared"]), responses="/responses"),
        serving(entry("b", b.url + "/v1", model_prefixes=["b-", "held"]), responses="/responses"),
    )


@pytest.fixture
async def providers(aiohttp_server: Any) -> tuple[ResponsesProvider, ResponsesProvider]:
    return (
        await ResponsesProvider(name="a").start(aiohttp_server),
        await ResponsesProvider(name="b").start(aiohttp_server),
    )


@pytest.fixture
async def gw(aiohttp_client: Any, providers: tuple[ResponsesProvider, ResponsesProvider]) -> Gateway:
    return await start_gateway(aiohttp_client, two_providers(*providers), Settings())


def sdk(gw: Gateway, key: str = "client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gw.client.make_url("/v1")), api_key=key, max_retries=0, timeout=10)


async def test_a_response_and_its_follow_ups_go_to_the_provider_that_made_it(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    a, b = providers
    async with sdk(gw) as client:
        made = await client.responses.create(model="b-model", input="hi")
        assert (made.id, made.output_text) == ("resp_b1", "Hi from b")
        assert made.usage is not None and made.usage.total_tokens == 11
        again = await client.responses.retrieve(made.id)
        assert (again.id, again.output_text) == ("resp_b1", "Hi from b")
        items = await client.responses.input_items.list(made.id)
        assert [item.id for item in items.data] == ["msg_in"]
        cancelled = await client.responses.cancel(made.id)
        assert cancelled.status == "cancelled"
        await client.responses.delete(made.id)
    assert [(r.method, r.path) for r in b.requests] == [
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/resp_b1"),
        ("GET", "/v1/responses/resp_b1/input_items"),
        ("POST", "/v1/responses/resp_b1/cancel"),
        ("DELETE", "/v1/responses/resp_b1"),
    ]
    assert a.requests == []
    assert [e.operation for e in await gw.settled(5)] == ["chat", "responses", "responses", "responses", "responses"]
    # Deleted: the gateway forgets it too.
    assert gw.app[STATE].responses.owner("resp_b1") is None


async def test_a_streamed_response_is_remembered_and_retrieved(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    _, b = providers
    async with sdk(gw) as client:
        stream = await client.responses.create(model="b-model", input="hi", stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events] == ["response.created"] + ["response.output_text.delta"] * 3 + [
            "response.completed"
        ]
        final = events[-1]
        assert final.type == "response.completed" and final.response.output_text == "Hi from b"
        again = await client.responses.retrieve("resp_b1")
    assert again.output_text == "Hi from b"
    assert b.last.path == "/v1/responses/resp_b1"


async def test_previous_response_id_routes_a_new_request_to_the_provider_that_holds_it(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    a, b = providers
    async with sdk(gw) as client:
        first = await client.responses.create(model="b/shared", input="hi")
        assert first.id == "resp_b1" and b.last.json()["model"] == "shared"
        # `shared` alone routes to a; continuing b's response, it goes to b.
        second = await client.responses.create(model="shared", input="more", previous_response_id=first.id)
        assert second.id == "resp_b2"
        assert b.last.json() == {"model": "shared", "input": "more", "previous_response_id": "resp_b1"}
        # A model that names its provider is the client's choice.
        third = await client.responses.create(model="a/shared", input="again", previous_response_id=second.id)
        assert third.id == "resp_a1"
        # An id the gateway does not know routes by the model, and the provider answers for it.
        fourth = await client.responses.create(model="shared", input="x", previous_response_id="resp_other")
        assert fourth.id == "resp_a2"


async def test_an_unknown_id_is_a_clear_404_unless_the_client_names_the_provider(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    a, b = providers
    async with sdk(gw) as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.responses.retrieve("resp_elsewhere")
        assert unknown.value.body == NOT_FOUND["error"]
        assert a.requests == b.requests == []
        b.made["resp_elsewhere"] = {"id": "resp_elsewhere", "object": "response", "status": "completed", "output": []}
        found = await client.responses.retrieve("resp_elsewhere", extra_query={"provider": "b"})
        assert found.id == "resp_elsewhere"
        assert b.last.path == "/v1/responses/resp_elsewhere" and b.last.query == {}
        # The provider's own 404 passes through as it came.
        with pytest.raises(openai.NotFoundError) as theirs:
            await client.responses.delete("resp_nowhere", extra_query={"provider": "a"})
        assert theirs.value.body == {
            "message": "Response with id 'resp_nowhere' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    raw = await gw.client.get("/v1/responses/resp_x%2F..%2Fadmin")
    assert raw.status == 404 and (await raw.json())["error"]["code"] == "response_not_found"


async def test_the_clients_query_goes_on_but_provider(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    _, b = providers
    async with sdk(gw) as client:
        made = await client.responses.create(model="b-model", input="hi")
        await client.responses.input_items.list(made.id, limit=5, order="asc", extra_query={"provider": "b"})
    assert b.last.path == "/v1/responses/resp_b1/input_items"
    assert b.last.query == {"limit": "5", "order": "asc"}


async def test_another_clients_response_is_not_reachable(
    aiohttp_client: Any, providers: tuple[ResponsesProvider, ResponsesProvider], tmp_path: Path
) -> None:
    a, b = providers
    keys = write_keys(tmp_path, {"alice": {}, "bob": {}})
    gw = await start_gateway(aiohttp_client, two_providers(a, b), auth_settings(auth_keys_file=str(keys.path)))
    async with sdk(gw, keys.key("alice")) as alice, sdk(gw, keys.key("bob")) as bob:
        made = await alice.responses.create(model="b-model", input="secret")
        assert (await alice.responses.retrieve(made.id)).id == made.id
        for attempt in (
            bob.responses.retrieve(made.id),
            bob.responses.retrieve(made.id, extra_query={"provider": "b"}),
            bob.responses.delete(made.id),
            bob.responses.create(model="b-model", input="x", previous_response_id=made.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await attempt
    assert [(r.method, r.path) for r in b.requests] == [("POST", "/v1/responses"), ("GET", "/v1/responses/resp_b1")]


async def test_bytes_pass_unchanged_and_the_first_event_arrives_while_the_provider_holds_the_rest(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    _, b = providers
    plain = b'{"model":"b-model","input":"hi","store":true}'
    answer = await gw.client.post("/v1/responses", data=plain, headers={"Content-Type": "application/json"})
    assert await answer.read() == orjson.dumps(b.made["resp_b1"])
    assert b.last.body == plain
    streamed = b'{"model":"held","input":"hi","stream":true}'
    response = await gw.client.post("/v1/responses", data=streamed, headers={"Content-Type": "application/json"})
    first, *rest = response_events("resp_b2", "Hi from b", "held")
    received = b""
    while len(received) < len(first):
        received += await asyncio.wait_for(response.content.readany(), 5)
    assert received == first
    assert b.holding.is_set() and not b.release.is_set()
    b.release.set()
    assert received + await response.read() == first + b"".join(rest)
    assert b.last.body == streamed
    # Both remembered, with the provider that made them.
    owners = gw.app[STATE].responses
    assert owners.owner("resp_b1") == ("b", None) and owners.owner("resp_b2") == ("b", None)


async def test_a_response_not_stored_is_not_remembered(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    async with sdk(gw) as client:
        made = await client.responses.create(model="b-model", input="hi", store=False)
    assert gw.app[STATE].responses.owner(made.id) is None


async def test_metrics_count_the_tokens_of_plain_and_streamed_responses(
    aiohttp_client: Any, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    settings = telemetry_settings(max_request_body_size=1 << 20)
    gw = await start_gateway(aiohttp_client, two_providers(*providers), settings)
    async with sdk(gw) as client:
        await client.responses.create(model="b-model", input="hi")
        stream = await client.responses.create(model="b-model", input="hi", stream=True)
        [event async for event in stream]
        await client.responses.retrieve("resp_b1")
    await gw.settled(3)
    found = await samples(gw.app)
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "b"}
    sums = {
        kind: sum(v for _, v in found.matching("gen_ai_client_token_usage_sum", gen_ai_token_type=kind, **labels))
        for kind in ("input", "output")
    }
    # 8 in and 3 out each; retrieving a response is no new usage.
    assert sums == {"input": 16, "output": 6}
    retrieved = {"gen_ai_operation_name": "responses", "gen_ai_provider_name": "b"}
    assert sum(v for _, v in found.matching("gen_ai_client_token_usage_count", **retrieved)) == 0


async def test_an_image_in_the_input_is_refused_while_vision_is_off(
    gw: Gateway, providers: tuple[ResponsesProvider, ResponsesProvider]
) -> None:
    picture = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}
    async with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="b-model", input=[{"role": "user", "content": [picture]}])
    assert refused.value.code == "vision_disabled"
    assert providers[1].requests == []
