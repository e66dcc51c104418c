"""Model groups end to end: client -> gateway -> several fake deployments on 127.0.0.1, each with a failure script,
latency and token rate on the fleet's fake clock. Which deployment served, what each received, the headers, the
record, the breakers, the 503 and the measurements."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.routing.breaker import CLOSED, HALF_OPEN, OPEN
from gateway.routing.deployments import Live
from gateway.runtime.state import STATE
from tests.fakes.access import FakeClock, write_keys
from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import Gateway, auth_settings, start_gateway
from tests.fakes.native import AnthropicProvider
from tests.fakes.net import free_port
from tests.fakes.providers import Deployment
from tests.fakes.tables import PROVIDER_KEY, entry, group_table, serving, table_of
from tests.fakes.telemetry import captured_logs, events_named, samples


class Fixture:
    def __init__(self, gateway: Gateway, deployments: dict[str, Deployment], clock: FakeClock) -> None:
        self.gateway = gateway
        self.deployments = deployments
        self.clock = clock

    @property
    def state(self) -> Any:
        return self.gateway.app[STATE]

    def live(self, pid: str, model: str = "m") -> Live:
        return self.state.fleet.live[(pid, model)]

    def calls(self) -> dict[str, int]:
        return {pid: d.calls for pid, d in self.deployments.items()}

    async def ask(self, model: str = "g", **extra: Any) -> Any:
        return await self.gateway.client.post(CHAT, json=chat(model, **extra))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def routed(aiohttp_server: Any, aiohttp_client: Any, clock: FakeClock) -> Any:
    """A gateway over deployments `a`, `b`, `c`... (each a Deployment with `specs[pid]`) in one group `g`, plus
    `dead`, a deployment nothing listens on, when named."""

    async def make(
        specs: dict[str, dict[str, Any]], group: dict[str, Any] | None = None, seed: int = 1, **settings: Any
    ) -> Fixture:
        made: dict[str, Deployment] = {}
        urls: dict[str, str] = {}
        for pid, spec in specs.items():
            if pid == "dead":
                urls[pid] = f"http://127.0.0.1:{free_port()}"
                continue
            made[pid] = await Deployment(name=pid, clock=clock.advance, **spec).start(aiohttp_server)
            urls[pid] = made[pid].url
        deployments = (group or {}).pop("deployments", None) or [{"provider": p, "model": "m"} for p in specs]
        table = group_table(urls, {"g": {"deployments": deployments, **(group or {})}})
        gateway = await start_gateway(aiohttp_client, table, **settings)
        fleet = gateway.app[STATE].fleet
        fleet.clock, fleet.rng = clock, random.Random(seed)
        return Fixture(gateway, made, clock)

    return make


async def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(await response.read())
    return body["error"]


# --- fallback ----------------------------------------------------------------------------------------------


async def test_fallback_goes_in_order_before_the_first_byte(routed: Any) -> None:
    f = await routed({"a": {"script": [500]}, "b": {"script": [429]}, "c": {}})
    response = await f.ask()
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "from c"
    assert (response.headers["x-gateway-provider"], response.headers["x-gateway-model"]) == ("c", "m")
    assert f.calls() == {"a": 1, "b": 1, "c": 1}
    # Each provider got the deployment's model name: the group's name never leaves the gateway.
    assert [d.last.json()["model"] for d in f.deployments.values()] == ["m", "m", "m"]
    (exchange,) = await f.gateway.settled()
    assert (exchange.group, exchange.strategy, exchange.fallbacks, exchange.provider) == ("g", "fallback", 2, "c")
    assert (f.live("a").failed, f.live("b").failed, f.live("c").served) == (1, 1, 1)


async def test_a_connection_refused_falls_over_too(routed: Any) -> None:
    f = await routed({"dead": {}, "b": {}})
    response = await f.ask()
    assert response.status == 200
    assert response.headers["x-gateway-provider"] == "b"
    (exchange,) = await f.gateway.settled()
    assert (exchange.fallbacks, exchange.error_type) == (1, None)


async def test_the_client_s_own_error_is_relayed_not_retried_elsewhere(routed: Any) -> None:
    f = await routed({"a": {"script": [400]}, "b": {}})
    response = await f.ask()
    assert response.status == 400
    assert (await error_of(response))["message"] == "a says 400"
    assert response.headers["x-gateway-provider"] == "a"
    assert f.calls() == {"a": 1, "b": 0}


async def test_the_attempt_limit_ends_the_walk_with_a_503_naming_why(routed: Any) -> None:
    f = await routed({"a": {"script": [500]}, "dead": {}, "c": {}}, {"attempts": 2})
    response = await f.ask()
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    error = await error_of(response)
    assert error["code"] == "no_deployment_available"
    dead = "dead/m: the provider could not be reached: "
    assert error["message"].startswith("no deployment of model 'g' could serve the request: a/m: answered 500; " + dead)
    assert error["message"].endswith("; c/m: not tried, 2 attempts made")
    assert f.calls() == {"a": 1, "c": 0}
    (exchange,) = await f.gateway.settled()
    assert (exchange.group, exchange.fallbacks) == ("g", 1)


async def test_the_time_budget_ends_the_walk(routed: Any) -> None:
    # a takes 40 s of the fleet's clock to answer 503: the 30 s budget is spent, b is not tried.
    f = await routed({"a": {"script": [503], "stall": 40.0}, "b": {}})
    response = await f.ask()
    assert response.status == 503
    assert (await error_of(response))["message"].endswith("a/m: answered 503; b/m: not tried, the 30s budget was spent")
    assert f.calls() == {"a": 1, "b": 0}


async def test_never_after_the_first_byte_of_a_stream(routed: Any) -> None:
    f = await routed({"a": {"cut": True}, "b": {}})
    response = await f.ask(stream=True)
    assert response.status == 200
    assert response.headers["x-gateway-provider"] == "a"
    with pytest.raises(Exception):  # noqa: B017 - the client's connection is cut, never ended cleanly
        await response.read()
    assert f.calls() == {"a": 1, "b": 0}
    await f.gateway.settled()
    # A cut answer counts against a's breaker.
    assert (f.live("a").breaker.consecutive, f.live("a").served) == (1, 1)


# --- breakers ----------------------------------------------------------------------------------------------


async def test_a_breaker_opens_half_opens_and_closes(routed: Any) -> None:
    f = await routed({"a": {"script": [500] * 5}, "b": {}})
    with captured_logs() as logs:
        for _ in range(5):
            assert (await f.ask()).headers["x-gateway-provider"] == "b"
        breaker = f.live("a").breaker
        assert (breaker.state, breaker.blocked_until) == (OPEN, 1005.0)
        # Open: a gets nothing.
        assert (await f.ask()).headers["x-gateway-provider"] == "b"
        assert f.calls() == {"a": 5, "b": 6}
        # Its time is up: the next request is the probe, a has recovered, the breaker closes.
        f.clock.advance(5)
        assert (await f.ask()).headers["x-gateway-provider"] == "a"
        assert breaker.state == CLOSED
    assert [e["event"] for e in logs if e["event"].startswith("circuit")] == [
        "circuit breaker opened",
        "circuit breaker half-open: one probe goes through",
        "circuit breaker closed: the probe succeeded",
    ]
    (opened,) = events_named(logs, "circuit breaker opened")
    assert (opened["deployment"], opened["seconds"]) == ("a/m", 5.0)
    assert opened["reason"] == "5 failures in a row, the last: answered 500"


async def test_a_failed_probe_opens_it_again_for_longer(routed: Any) -> None:
    f = await routed({"a": {"script": [500] * 6}, "b": {}})
    for _ in range(5):
        await f.ask()
    f.clock.advance(5)
    assert (await f.ask()).headers["x-gateway-provider"] == "b"  # the probe failed, b answered
    breaker = f.live("a").breaker
    assert (breaker.state, breaker.blocked_until) == (OPEN, 1015.0)
    assert breaker.transitions == {OPEN: 2, HALF_OPEN: 1}


async def test_when_every_breaker_is_open_a_503_with_the_soonest_retry_after(routed: Any) -> None:
    f = await routed({"a": {"script": [500] * 5}, "b": {"script": [502] * 10}})
    for _ in range(5):
        await f.ask()
    f.clock.advance(2)
    calls = f.calls()
    response = await f.ask()
    assert f.calls() == calls  # nothing tried
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    message = (await error_of(response))["message"]
    assert "a/m: circuit open for 3s more (5 failures in a row, the last: answered 500)" in message
    assert "b/m: circuit open for 3s more" in message


# --- policies ----------------------------------------------------------------------------------------------


async def test_a_restricted_client_s_deployments_are_skipped_never_tried(routed: Any, tmp_path: Path) -> None:
    keys = write_keys(
        tmp_path,
        {"narrow": {"policy": "narrow"}, "none": {"policy": "none"}},
        {"narrow": {"models": ["b/*"]}, "none": {"models": ["z/*"]}},
    )
    f = await routed({"a": {}, "b": {}}, **_auth(keys.path))
    response = await f.gateway.client.post(
        CHAT, json=chat("g"), headers={"Authorization": f"Bearer {keys.key('narrow')}"}
    )
    assert response.status == 200
    assert response.headers["x-gateway-provider"] == "b"
    assert f.calls() == {"a": 0, "b": 1}
    assert f.live("a").skipped == 1
    # A client that may use none of them: the policy's own 403, nothing tried.
    response = await f.gateway.client.post(
        CHAT, json=chat("g"), headers={"Authorization": f"Bearer {keys.key('none')}"}
    )
    assert response.status == 403
    assert (await error_of(response))["code"] == "model_not_allowed"
    assert f.calls() == {"a": 0, "b": 1}


def _auth(path: Path) -> dict[str, Any]:
    settings = auth_settings(auth_keys_file=str(path))
    return {"auth_enable": settings.auth_enable, "auth_keys_file": settings.auth_keys_file}


async def test_the_model_filter_skips_a_deployment(routed: Any) -> None:
    f = await routed({"a": {}, "b": {}}, disallowed_models=("a/m",))
    response = await f.ask()
    assert response.headers["x-gateway-provider"] == "b"
    assert f.calls() == {"a": 0, "b": 1}


# --- strategies --------------------------------------------------------------------------------------------


async def test_an_unknown_tag_is_a_400_naming_the_known_ones(routed: Any) -> None:
    f = await routed({"a": {}})
    response = await f.ask("g@fast")
    assert response.status == 400
    error = await error_of(response)
    assert error["message"] == "unknown strategy tag '@fast': the known tags are @price, @latency, @tokenrate"
    assert f.calls() == {"a": 0}


PRICES = [
    {"provider": "a", "model": "m", "input_price": 1.0, "output_price": 10.0},
    {"provider": "b", "model": "m", "input_price": 5.0, "output_price": 2.0},
]


async def test_price_takes_the_request_s_token_mix(routed: Any) -> None:
    f = await routed({"a": {}, "b": {}}, {"deployments": PRICES})
    long_input = chat("g@price", max_tokens=1)
    long_input["messages"][0]["content"] = "x" * 4000
    assert (await f.gateway.client.post(CHAT, json=long_input)).headers["x-gateway-provider"] == "a"
    response = await f.ask("g@price", max_tokens=4000)
    assert response.headers["x-gateway-provider"] == "b"
    assert f.deployments["b"].last.json()["model"] == "m"  # tags stripped: the provider sees its own model name
    exchanges = await f.gateway.settled(2)
    assert [e.strategy for e in exchanges] == ["price", "price"]


async def test_latency_tokenrate_and_both(routed: Any, clock: FakeClock) -> None:
    f = await routed({"a": {}, "b": {}, "c": {}})
    for pid, ttft, rate in (("a", 0.5, 100.0), ("b", 0.2, 20.0), ("c", 0.9, 60.0)):
        f.live(pid).measure.observe(clock(), ttft, rate, None)
    assert (await f.ask("g@latency")).headers["x-gateway-provider"] == "b"
    assert (await f.ask("g@tokenrate")).headers["x-gateway-provider"] == "a"
    for tags in ("g@latency@tokenrate", "g@tokenrate@latency"):
        assert (await f.ask(tags)).headers["x-gateway-provider"] == "a"
    exchanges = await f.gateway.settled(4)
    assert [e.strategy for e in exchanges] == ["latency", "tokenrate", "latency+tokenrate", "latency+tokenrate"]


async def test_the_group_s_default_strategy(routed: Any, clock: FakeClock) -> None:
    f = await routed({"a": {}, "b": {}}, {"strategy": "latency"})
    f.live("a").measure.observe(clock(), 0.9, None, None)
    f.live("b").measure.observe(clock(), 0.1, None, None)
    assert (await f.ask()).headers["x-gateway-provider"] == "b"
    (exchange,) = await f.gateway.settled()
    assert exchange.strategy == "latency"


async def test_weighted_default(routed: Any) -> None:
    deployments = [{"provider": "a", "model": "m", "weight": 1}, {"provider": "b", "model": "m", "weight": 0}]
    f = await routed({"a": {}, "b": {}}, {"deployments": deployments, "strategy": "weighted"})
    for _ in range(3):
        assert (await f.ask()).headers["x-gateway-provider"] == "a"


# --- measurements ------------------------------------------------------------------------------------------


async def test_a_stream_measures_time_to_first_token_and_tokens_per_second(routed: Any) -> None:
    gate = asyncio.Event()
    f = await routed({"a": {"ttft": 0.25, "rate": 20.0, "tokens": 11, "gate": gate}})
    response = await f.ask(stream=True)
    assert response.status == 200
    first = await response.content.readline()
    assert b"from a" in first  # the gateway has read the first content, on the clock as the provider set it
    gate.set()
    rest = await response.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    await f.gateway.settled()
    measure = f.live("a").measure
    assert measure.ttft == pytest.approx(0.25)
    assert measure.rate == pytest.approx(20.0)  # 10 tokens after the first, in 0.5 s
    assert measure.output == 11


async def test_a_plain_answer_measures_its_output_only(routed: Any) -> None:
    f = await routed({"a": {"tokens": 42}})
    assert (await f.ask()).status == 200
    await f.gateway.settled()
    measure = f.live("a").measure
    assert (measure.samples, measure.output) == (0, 42)


async def test_measurements_survive_a_reload_for_deployments_that_stay(routed: Any, clock: FakeClock) -> None:
    f = await routed({"a": {}, "b": {}})
    f.live("a").measure.observe(clock(), 0.3, None, None)
    state = f.state
    table = state.table
    urls = {pid: d.url for pid, d in f.deployments.items()}
    state.swap(group_table(urls, {"g": {"deployments": [{"provider": "a", "model": "m"}]}}))
    assert f.live("a").measure.ttft == 0.3
    assert ("b", "m") not in state.fleet.live
    assert table is not state.table


# --- the official SDK --------------------------------------------------------------------------------------


async def test_the_openai_sdk_reaches_a_group(routed: Any) -> None:
    f = await routed({"a": {"script": [503]}, "b": {}})
    client = openai.AsyncOpenAI(base_url=str(f.gateway.client.make_url("/v1")), api_key="unused", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="g@latency", messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "from b"
    assert (raw.headers["x-gateway-provider"], raw.headers["x-gateway-model"]) == ("b", "m")
    await client.close()


# --- what shows the choice: access line, metrics, /v1/models -----------------------------------------------


async def test_the_access_line_and_the_metrics_name_the_choice(routed: Any) -> None:
    f = await routed(
        {"a": {"script": [503] * 5}, "b": {}},
        telemetry_enable=True,
        telemetry_metrics_port=0,
        host="127.0.0.1",
    )
    with captured_logs() as logs:
        for _ in range(5):
            assert (await f.ask("g@latency")).status == 200
        await f.gateway.settled(5)
    line = events_named(logs, "request")[0]
    assert (line["provider"], line["model"], line["group"], line["strategy"], line["fallbacks"]) == (
        "b",
        "m",
        "g",
        "latency",
        1,
    )
    found = await samples(f.gateway.app)
    a, b = (
        {"gen_ai_provider_name": "a", "gen_ai_request_model": "m"},
        {"gen_ai_provider_name": "b", "gen_ai_request_model": "m"},
    )
    assert found.value("llmgw_group_requests_total", group="g", strategy="latency") == 5
    assert found.value("llmgw_group_fallbacks_total", group="g") == 5
    assert found.value("llmgw_breaker_state", **a) == 2
    assert found.value("llmgw_breaker_state", **b) == 0
    assert found.value("llmgw_breaker_transitions_total", state="open", **a) == 1
    assert found.value("llmgw_deployment_calls_total", outcome="failed", **a) == 5
    assert found.value("llmgw_deployment_calls_total", outcome="served", **b) == 5
    # The deployment's model is a known label of the GenAI series.
    assert (
        found.value("gen_ai_server_request_duration_seconds_count", gen_ai_operation_name="chat", error_type="", **b)
        == 5
    )


async def test_v1_models_lists_each_group_once_with_its_deployments(routed: Any, tmp_path: Path) -> None:
    keys = write_keys(tmp_path, {"full": {}, "narrow": {"policy": "narrow"}}, {"narrow": {"models": ["b/*"]}})
    f = await routed({"a": {}, "b": {}}, {"strategy": "price+latency"}, **_auth(keys.path))

    async def groups(client: str) -> list[dict[str, Any]]:
        response = await f.gateway.client.get("/v1/models", headers={"Authorization": f"Bearer {keys.key(client)}"})
        assert response.status == 200
        return [m for m in (await response.json())["data"] if "deployments" in m]

    assert await groups("full") == [
        {
            "id": "g",
            "object": "model",
            "created": 0,
            "owned_by": "gateway",
            "strategy": "price+latency",
            "deployments": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}],
            "service_type": "llm",  # chat-only providers: every deployment is an LLM
        }
    ]
    assert [g["deployments"] for g in await groups("narrow")] == [[{"provider": "b", "model": "m"}]]


async def test_v1_models_retrieve_answers_a_group_as_the_list_does(routed: Any) -> None:
    f = await routed({"a": {}, "b": {}}, disallowed_models=("a/m",))
    response = await f.gateway.client.get("/v1/models/G")
    assert response.status == 200
    assert await response.json() == {
        "id": "g",
        "object": "model",
        "created": 0,
        "owned_by": "gateway",
        "strategy": "fallback",
        "deployments": [{"provider": "b", "model": "m"}],
        "service_type": "llm",
    }
    assert f.calls() == {"a": 0, "b": 0}


async def test_empty_messages_are_dropped_for_a_deployment_as_for_a_pinned_provider(routed: Any) -> None:
    f = await routed({"a": {"script": [503]}, "b": {}})
    body = chat("g")
    body["messages"] = [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}]
    assert (await f.gateway.client.post(CHAT, json=body)).status == 200
    # Both deployments got the same body, without the empty message, and their own model name.
    for deployment in f.deployments.values():
        assert deployment.last.json() == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


# --- another dialect -----------------------------------------------------------------------------------------


async def test_a_group_on_the_messages_route_falls_over_and_answers_in_anthropic_s_envelope(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    fake = await AnthropicProvider().start(aiohttp_server)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    table = table_of(
        serving(entry("down", dead, "xheader"), messages="/messages"),
        serving(entry("claude", fake.url + "/v1", "xheader"), messages="/messages"),
        env={"DOWN_API_KEY": PROVIDER_KEY, "CLAUDE_API_KEY": PROVIDER_KEY},
        models={
            "sonnet": {
                "deployments": [{"provider": "down", "model": "x"}, {"provider": "claude", "model": "claude-fake"}]
            },
            "gone": {"deployments": [{"provider": "down", "model": "x"}]},
        },
    )
    gw = await start_gateway(aiohttp_client, table)
    body = b'{"model":"sonnet@latency","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}'
    response = await gw.client.post("/v1/messages", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert (await response.json())["content"][0]["text"] == "Hello from the fake"
    assert (response.headers["x-gateway-provider"], response.headers["x-gateway-model"]) == ("claude", "claude-fake")
    assert fake.last.json()["model"] == "claude-fake"
    response = await gw.client.post(
        "/v1/messages", data=body.replace(b"sonnet@latency", b"gone"), headers={"Content-Type": "application/json"}
    )
    assert response.status == 503
    answer = await response.json()
    assert answer["type"] == "error"
    assert answer["error"]["message"].startswith("no deployment of model 'gone' could serve the request: down/x: ")
