"""Metrics scraped from a real gateway's /metrics listener after known traffic: exact values, bounded labels."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.api.errors import error_response
from gateway.config.providers import parse_table
from gateway.dialects import openai
from gateway.errors import Handler
from gateway.telemetry.metrics import DURATION_BUCKETS, METRICS, TOKEN_BUCKETS, ModelLabels
from gateway.telemetry.scanners import SseUsage
from gateway.upstream.outbound import request_body
from tests.fakes.bodies import chat
from tests.fakes.gateways import gateway_app, telemetry_settings
from tests.fakes.net import free_port, read_until_cut
from tests.fakes.providers import PLAIN_USAGE, STREAM_USAGE, ChatProvider
from tests.fakes.tables import telemetry_table, telemetry_table_yaml
from tests.fakes.telemetry import samples

DURATION = "gen_ai_server_request_duration_seconds"
TOKENS = "gen_ai_client_token_usage"
TTFT = "gen_ai_server_time_to_first_token_seconds"
TPOT = "gen_ai_server_time_per_output_token_seconds"
HTTP = "llmgw_http_requests_total"


@web.middleware
async def deny_marked(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stands in for client auth: a 401 made by a middleware inside the observer."""
    if request.headers.get("X-Test-Deny") == "raise":
        raise web.HTTPUnauthorized()
    if request.headers.get("X-Test-Deny") == "return":
        return error_response(openai.DIALECT, 401, "invalid client key", "invalid_request_error", "invalid_api_key")
    return await handler(request)


@pytest.fixture
async def setup(aiohttp_server: Any, aiohttp_client: Any) -> Any:
    fake = await ChatProvider().start(aiohttp_server)
    app = gateway_app(telemetry_settings(), telemetry_table(fake.port, free_port()))
    app.middlewares.append(deny_marked)  # innermost: inside render_errors, as an auth middleware would be
    client = await aiohttp_client(app)
    return fake, app, client


async def post(client: Any, body: dict[str, Any], **kwargs: Any) -> tuple[int, bytes, Any]:
    async with client.post("/v1/chat/completions", data=orjson.dumps(body), **kwargs) as response:
        return response.status, await response.read(), response.headers


async def test_known_traffic_gives_exact_metric_values(setup: Any) -> None:
    fake, app, client = setup
    sent: dict[str, int] = {}
    received: dict[str, int] = {}

    async def traffic(provider: str, body: dict[str, Any], status: int) -> bytes:
        raw = orjson.dumps(body)
        async with client.post("/v1/chat/completions", data=raw) as response:
            assert response.status == status
            data: bytes = await response.read()
        sent[provider] = sent.get(provider, 0) + len(raw)
        received[provider] = received.get(provider, 0) + len(data)
        return data

    await traffic("fake", chat("fake/plain"), 200)  # plain, usage in the body
    await traffic("fake", chat("fake/plain"), 200)
    streamed = await traffic("fake", chat("fake/streamer", stream=True), 200)  # usage asked for by the gateway
    await traffic("quiet", chat("quiet/streamer", stream=True), 200)  # stream without usage
    await traffic("fake", chat("fake/fail"), 500)  # the provider's own error, passed through
    await traffic("fake", chat("fake/unauth"), 401)  # the provider refuses the key
    assert b'"usage"' not in streamed  # read for the metrics, not relayed: the client did not ask for it
    assert (await post(client, chat("fake/blocked")))[0] == 403  # filtered
    assert (await post(client, chat("nobody/x")))[0] == 404  # no provider
    assert (await post(client, chat("down/x")))[0] == 502  # provider unreachable
    assert (await post(client, chat("fake/slow")))[0] == 504  # provider too slow
    assert (await post(client, chat("fake/plain"), headers={"X-Test-Deny": "raise"}))[0] == 401
    assert (await post(client, chat("fake/plain"), headers={"X-Test-Deny": "return"}))[0] == 401
    too_big = {"model": "fake/plain", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert (await post(client, too_big))[0] == 413
    async with client.get("/health") as response:
        assert response.status == 200
    async with client.get("/nowhere") as response:
        assert response.status == 404

    m = await samples(app)
    route = "/v1/chat/completions"
    assert m.value(HTTP, route=route, method="POST", status="200") == 4
    assert m.value(HTTP, route=route, method="POST", status="500") == 1
    assert m.value(HTTP, route=route, method="POST", status="401") == 3
    for status in ("403", "404", "502", "504", "413"):
        assert m.value(HTTP, route=route, method="POST", status=status) == 1, status
    assert m.value(HTTP, route="/health", method="GET", status="200") == 1
    assert m.value(HTTP, route="unmatched", method="GET", status="404") == 1
    assert m.value("llmgw_http_request_duration_seconds_count", route=route, method="POST") == 13

    def duration_count(provider: str, model: str, error: str = "") -> float:
        labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": provider, "gen_ai_request_model": model}
        return m.value(f"{DURATION}_count", **labels, error_type=error)

    # Nothing was listed yet, so every model counts as `other`; requests refused before routing have neither.
    assert duration_count("fake", "other") == 3
    assert duration_count("quiet", "other") == 1
    assert duration_count("fake", "other", "500") == 1
    assert duration_count("fake", "other", "401") == 1  # the provider's own 401, passed through
    assert duration_count("", "", "401") == 2  # both 401s made by the inner middleware
    assert duration_count("fake", "other", "403") == 1
    assert duration_count("", "", "404") == 1
    assert duration_count("down", "other", "connect") == 1
    assert duration_count("fake", "other", "timeout") == 1
    assert duration_count("", "", "413") == 1
    assert sum(v for _, v in m.matching(f"{DURATION}_count")) == 13

    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "fake", "gen_ai_request_model": "other"}
    inp, out = PLAIN_USAGE, STREAM_USAGE
    assert m.value(f"{TOKENS}_count", **labels, gen_ai_token_type="input") == 3
    assert (
        m.value(f"{TOKENS}_sum", **labels, gen_ai_token_type="input") == 2 * inp["prompt_tokens"] + out["prompt_tokens"]
    )
    assert m.value(f"{TOKENS}_sum", **labels, gen_ai_token_type="output") == 2 * 7 + 3
    assert m.value(f"{TOKENS}_bucket", **labels, gen_ai_token_type="output", le="4.0") == 1  # the stream's 3
    assert m.value(f"{TOKENS}_bucket", **labels, gen_ai_token_type="output", le="16.0") == 3
    quiet = {**labels, "gen_ai_provider_name": "quiet"}
    assert m.value(f"{TOKENS}_count", **quiet, gen_ai_token_type="input") == 0  # its stream reported no usage
    # Both streams had content: both have a time to first token; only the one with usage a time per token.
    assert m.value(f"{TTFT}_count", **labels) == 1
    assert m.value(f"{TTFT}_count", **quiet) == 1
    assert m.value(f"{TPOT}_count", **labels) == 1
    assert m.value(f"{TPOT}_count", **quiet) == 0

    errors = "llmgw_upstream_errors_total"
    assert m.value(errors, gen_ai_provider_name="fake", kind="status") == 2
    assert m.value(errors, gen_ai_provider_name="fake", kind="timeout") == 1
    assert m.value(errors, gen_ai_provider_name="down", kind="connect") == 1
    relayed = "llmgw_relayed_bytes_total"
    assert m.value(relayed, gen_ai_provider_name="fake", direction="response") == received["fake"]
    assert m.value(relayed, gen_ai_provider_name="quiet", direction="response") == received["quiet"]
    assert m.value(relayed, gen_ai_provider_name="quiet", direction="request") == sent["quiet"]
    assert m.value("llmgw_config_loads_total", result="success") == 1
    assert m.value("llmgw_providers", state="served") == 3
    assert m.value("llmgw_http_requests_in_flight") == 0
    assert m.value("llmgw_active_streams", gen_ai_provider_name="fake") == 0


async def test_buckets_fit_llm_latencies_and_token_counts(setup: Any) -> None:
    _, app, client = setup
    await post(client, chat("fake/plain"))
    m = await samples(app)
    les = {labels["le"] for labels, _ in m.matching(f"{DURATION}_bucket")}
    assert {"0.01", "81.92", "327.68", "+Inf"} <= les
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] > 120
    assert TOKEN_BUCKETS[0] == 1 and TOKEN_BUCKETS[-1] >= 1_000_000


async def test_model_labels_come_only_from_known_models(setup: Any) -> None:
    fake, app, client = setup
    for i in range(20):
        await post(client, chat(f"fake/made-up-{i}"))
    await post(client, chat("fake/listed-in-table"))
    await post(client, chat("fake/plain"))
    async with client.get("/v1/models") as response:  # a successful listing makes its models known
        assert response.status == 200
    await post(client, chat("fake/plain"))
    await post(client, chat("fake/PLAIN"))  # known, case aside: counted under the listed spelling
    m = await samples(app)
    models = m.label_values(f"{DURATION}_count", "gen_ai_request_model")
    assert models == {"other", "listed-in-table", "plain"}
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "fake", "error_type": ""}
    assert m.value(f"{DURATION}_count", **labels, gen_ai_request_model="other") == 21
    assert m.value(f"{DURATION}_count", **labels, gen_ai_request_model="plain") == 2
    assert m.value(f"{DURATION}_count", **labels, gen_ai_request_model="listed-in-table") == 1
    assert m.value(HTTP, route="/v1/models", method="GET", status="200") == 1


def test_model_labels_are_bounded_and_read_the_allow_list() -> None:
    table = parse_table(telemetry_table_yaml(1, 2), {"FAKE_API_KEY": "k" * 10, "QUIET_SECRET_KEY": "q" * 10})
    labels = ModelLabels.of(("fake/gpt-x", "bare-model", "glob-*"), table)
    assert labels.label("fake", "gpt-x") == "gpt-x"
    assert labels.label("quiet", "gpt-x") == "other"  # known for its provider only
    assert labels.label("quiet", "bare-model") == "bare-model"  # a bare entry holds for any provider
    assert labels.label("fake", "glob-1") == "other"  # globs are never label values
    assert labels.label("fake", "listed-in-table") == "listed-in-table"
    small = ModelLabels(limit=3)
    small.learn(f"p/m{i}" for i in range(10))
    assert len(small) == 3 and small.full
    assert small.label("p", "m2") == "m2" and small.label("p", "m5") == "other"


async def test_active_streams_and_in_flight_while_a_stream_is_open(setup: Any) -> None:
    fake, app, client = setup
    response = await client.post("/v1/chat/completions", data=orjson.dumps(chat("fake/held", stream=True)))
    try:
        assert response.status == 200
        await fake.holding.wait()
        m = await samples(app)
        assert m.value("llmgw_active_streams", gen_ai_provider_name="fake") == 1
        assert m.value("llmgw_active_streams", gen_ai_provider_name="quiet") == 0
        assert m.value("llmgw_http_requests_in_flight") == 1
        fake.release.set()
        await response.read()
    finally:
        response.release()
    m = await samples(app)
    assert m.value("llmgw_active_streams", gen_ai_provider_name="fake") == 0
    assert m.value("llmgw_http_requests_in_flight") == 0


async def test_truncated_stream_counts_as_an_upstream_error(setup: Any) -> None:
    _, app, client = setup
    async with client.post("/v1/chat/completions", data=orjson.dumps(chat("fake/truncated", stream=True))) as cut:
        assert cut.status == 200
        assert (await read_until_cut(cut))[1]  # cut for the client too
    m = await samples(app)
    assert m.value("llmgw_upstream_errors_total", gen_ai_provider_name="fake", kind="truncated") == 1
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "fake", "gen_ai_request_model": "other"}
    assert m.value(f"{DURATION}_count", **labels, error_type="truncated") == 1


async def test_gateway_asks_for_stream_usage_only_when_flagged_and_not_set(setup: Any) -> None:
    fake, _, client = setup
    await post(client, chat("fake/streamer", stream=True))
    assert fake.last.json()["stream_options"] == {"include_usage": True}
    # The body was spliced, not re-encoded: the client's bytes come first, unchanged.
    assert fake.last.body.startswith(orjson.dumps(chat("streamer", stream=True))[:-1])
    await post(client, chat("fake/streamer", stream=True, stream_options={"include_usage": False}))
    assert fake.last.json()["stream_options"] == {"include_usage": False}
    await post(client, chat("quiet/streamer", stream=True))
    assert "stream_options" not in fake.last.json()
    await post(client, chat("fake/plain"))
    assert "stream_options" not in fake.last.json()


async def test_metrics_listener_is_separate_and_off_by_default(aiohttp_server: Any, aiohttp_client: Any) -> None:
    fake = await ChatProvider().start(aiohttp_server)
    app = gateway_app(telemetry_settings(telemetry_enable=False), telemetry_table(fake.port, free_port()))
    client = await aiohttp_client(app)
    async with client.get("/metrics") as response:
        assert response.status == 404  # never on the API port
    status, _, headers = await post(client, chat("fake/plain"))
    assert status == 200 and len(headers["X-Request-ID"]) == 32


async def test_metrics_port_is_not_the_api_port(setup: Any) -> None:
    _, app, client = setup
    async with client.get("/metrics") as response:
        assert response.status == 404
    url = f"http://127.0.0.1:{app[METRICS].port}/nope"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 404


async def test_proxy_calls_are_measured_as_their_route_pattern(setup: Any) -> None:
    _, app, client = setup
    async with client.get("/proxy/fake/models?key=client-supplied") as response:
        assert response.status == 200
    async with client.get("/proxy/nobody/models") as response:
        assert response.status == 404
    m = await samples(app)
    route = "/proxy/{provider}/{path}"
    assert m.value(HTTP, route=route, method="GET", status="200") == 1
    assert m.value(HTTP, route=route, method="GET", status="404") == 1
    labels = {"gen_ai_operation_name": "proxy", "gen_ai_request_model": ""}
    assert m.value(f"{DURATION}_count", **labels, gen_ai_provider_name="fake", error_type="") == 1
    assert m.value(f"{DURATION}_count", **labels, gen_ai_provider_name="", error_type="404") == 1


def test_telemetry_settings_accept_both_spellings() -> None:
    from gateway.config.settings import Settings

    assert Settings.from_env({}).telemetry_enable is False
    assert Settings.from_env({}).telemetry_metrics_port == 9464
    assert Settings.from_env({"TELEMETRY_ENABLE": "true"}).telemetry_enable is True
    assert Settings.from_env({"TELEMETRY_ENABLED": "true"}).telemetry_enable is True
    assert Settings.from_env({"TELEMETRY_ENABLE": "false", "TELEMETRY_ENABLED": "true"}).telemetry_enable is False
    assert Settings.from_env({"TELEMETRY_METRICS_PORT": "9000"}).telemetry_metrics_port == 9000


@pytest.mark.parametrize(
    ("chunks", "found_at"),
    [
        ([b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'], None),
        ([b": keep-alive\n\n", b'data: {"choices":[{"delta":{"content": null}}]}\n\n'], None),
        ([b'data: {"delta":{"content" : ""}}\n\n', b'data: {"choices":[{"delta":{"content":"a"}}]}\n'], 1),
        ([b'data: {"choices":[{"delta":{"content":"H', b'i"}}]}\n\n'], 1),  # found once the line is whole
        ([b'data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}\n\n'], 0),
        ([b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"a'], None),  # line unfinished
        ([b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"a\\":1}"}}]}}]}\n'], 0),
        ([b'data: {"choices":[{"delta":{"content":"say \\"content\\":\\"x"}}]}\n\n'], 0),
    ],
)
def test_first_content_skips_empty_role_and_keep_alive_chunks(chunks: list[bytes], found_at: int | None) -> None:
    scanner = SseUsage()
    marks = []
    for chunk in chunks:
        scanner.feed(chunk)
        marks.append(scanner.first_content_at)
    first = next((i for i, mark in enumerate(marks) if mark is not None), None)
    assert first == found_at


def test_request_body_splices_the_usage_option_or_rewrites_once() -> None:
    raw = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}\n '
    body = orjson.loads(raw)
    assert request_body(raw, body, "m", "m", False, ask_usage=False) is raw
    assert request_body(raw, body, "m", "m", False, ask_usage=True) == raw.rstrip()[:-1] + (
        b',"stream_options":{"include_usage":true}}'
    )
    renamed = orjson.loads(request_body(raw, {**body, "provider": "fake"}, "m", "fake/m", True, True))
    assert renamed == {**body, "model": "m", "stream_options": {"include_usage": True}}
    own = {**body, "stream_options": None}
    assert request_body(raw, own, "m", "m", False, ask_usage=True) is raw


async def test_a_usage_report_that_is_not_believed_is_counted(setup: Any) -> None:
    """`true` and 2**64 - 1 are no token counts: the answer is charged nothing by them, and the metric says so."""
    fake, app, client = setup
    fake.usage = {"prompt_tokens": True, "completion_tokens": 2}
    fake.stream_usage = {"prompt_tokens": 3, "completion_tokens": 2**64 - 1}
    assert (await post(client, chat("fake/plain")))[0] == 200
    assert (await post(client, chat("fake/streamer", stream=True)))[0] == 200
    fake.usage = {"prompt_tokens": 3, "completion_tokens": 2}
    assert (await post(client, chat("fake/plain")))[0] == 200  # a sane one is not counted
    m = await samples(app)
    assert m.value("llmgw_usage_refused_total", gen_ai_provider_name="fake") == 2
