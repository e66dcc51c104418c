"""The chat loop through the gateway, with the OpenAI SDK as the client, a fake provider whose models call tools
(tests/fakes/tool_models.py) and a real MCP server: the full loop plain and streamed, tool errors and time-outs as
results, the bounds, the client's own tools, the opt-out header, policies, metrics and logs."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from gateway.mcp import loop
from gateway.mcp.hub import MCP
from tests.fakes.access import write_keys
from tests.fakes.gateways import start_gateway, telemetry_settings
from tests.fakes.net import wait_for
from tests.fakes.tables import entry, one_provider, table_of
from tests.fakes.telemetry import captured_logs, events_named, samples
from tests.fakes.tool_models import REFUSAL, USAGE, WEATHER, ToolModel
from tests.mcp.conftest import mcp_settings

FILES_TOOLS = ["files__add", "files__echo", "files__fail", "files__slow"]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def model(aiohttp_server: Any) -> ToolModel:
    return await ToolModel().start(aiohttp_server)


async def started(aiohttp_client: Any, model: ToolModel, server: Any, **changes: Any) -> Any:
    base = changes.pop("base", None)
    settings = mcp_settings(server, **({"base": base} if base is not None else {}), **changes)
    gateway = await start_gateway(aiohttp_client, one_provider(model.url + "/v1", stream_usage=True), settings)
    hub = gateway.app[MCP]
    await wait_for(lambda: len(hub.catalog.tools) == 4, limit=15)
    return gateway


def sdk(gateway: Any, key: str = "client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(gateway.client.make_url("/v1")), api_key=key, max_retries=0, timeout=20)


def offered(seen: Any) -> list[str]:
    return [tool["function"]["name"] for tool in seen.json().get("tools") or []]


async def test_plain_chat_runs_the_tool_and_continues(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
    assert answer.choices[0].message.content == "results: 5"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.tool_calls is None
    # Both turns' usage, summed.
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (20, 4, 24)
    first, second = model.requests
    assert offered(first) == FILES_TOOLS and offered(second) == FILES_TOOLS
    assert first.json()["messages"] == HI
    assert second.json()["messages"] == [
        *HI,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0_0",
                    "type": "function",
                    "function": {"name": "files__add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0_0", "content": "5"},
    ]
    (exchange,) = await gateway.settled()
    assert [(run.tool, run.server, run.outcome) for run in exchange.tool_runs] == [("files__add", "files", "ok")]
    usage = exchange.scanner.usage
    assert (usage.input_tokens, usage.output_tokens) == (20, 4)


async def test_a_chat_without_tools_to_run_gets_the_providers_bytes(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    response = await gateway.client.post("/v1/chat/completions", json={"model": "p/chatty", "messages": HI})
    assert response.status == 200
    body = await response.read()
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "results: "
    assert orjson.loads(body)["usage"] == USAGE
    assert offered(model.last) == FILES_TOOLS


async def test_one_turns_tools_run_together_and_each_answers(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/pair", messages=HI)
    assert answer.choices[0].message.content == "results: 2 | hi"
    (exchange,) = await gateway.settled()
    assert sorted(run.tool for run in exchange.tool_runs) == ["files__add", "files__echo"]


@pytest.mark.parametrize(
    ("model_name", "result", "outcome"),
    [
        ("failing", "Error executing tool fail", "error"),
        ("bad-args", "error: the arguments are not valid JSON", "error"),
        ("sleepy", "error: the tool did not answer within 1.5s", "timeout"),
    ],
)
async def test_tool_failures_are_results_the_model_reads(
    aiohttp_client, model, files_server, model_name, result, outcome
):
    # Time-outs short enough for the slow tool (5 s), long enough for a busy machine's quick calls and polls.
    gateway = await started(aiohttp_client, model, files_server, mcp_request_timeout=1.5)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model=f"p/{model_name}", messages=HI)
    assert answer.choices[0].message.content == f"results: {result}"
    (exchange,) = await gateway.settled()
    assert [run.outcome for run in exchange.tool_runs] == [outcome]


async def test_the_loop_stops_after_max_iterations(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server, mcp_max_iterations=3)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/forever", messages=HI)
    # Two turns ran the tool; the third was offered no MCP tools, so it answered.
    assert answer.choices[0].message.content == "results: again | again"
    assert [offered(seen) for seen in model.requests] == [FILES_TOOLS, FILES_TOOLS, []]
    assert answer.usage.total_tokens == 36


async def test_the_time_budget_ends_the_tool_rounds(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server, mcp_loop_timeout=0.3, mcp_request_timeout=5.0)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/sleepy", messages=HI)
    # The tool got what was left of the 0.3 s, then the last turn came without MCP tools.
    assert answer.choices[0].message.content.startswith("results: error: the tool did not answer within 0.")
    assert [offered(seen) for seen in model.requests] == [FILES_TOOLS, []]


async def test_a_client_tool_call_goes_back_to_the_client(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/client", messages=HI, tools=[WEATHER])
    calls = answer.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_0_0", "get_weather", '{"city": "Oslo"}')
    ]
    assert answer.choices[0].finish_reason == "tool_calls"
    # The client's tools come first, the MCP tools after them.
    assert offered(model.last) == ["get_weather", *FILES_TOOLS]
    assert len(model.requests) == 1


async def test_a_mixed_turn_gives_the_client_only_its_own_calls(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/mixed", messages=HI, tools=[WEATHER])
    calls = answer.choices[0].message.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [("call_0_1", "get_weather")]
    (exchange,) = await gateway.settled()
    assert exchange.tool_runs == []


async def test_a_client_tool_named_like_an_mcp_tool_wins(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    own = {"type": "function", "function": {"name": "files__add", "parameters": {"type": "object"}}}
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/adder", messages=HI, tools=[own])
    # The model's call of files__add is the client's: it comes back, the gateway runs nothing.
    assert [c.function.name for c in answer.choices[0].message.tool_calls] == ["files__add"]
    assert offered(model.last) == ["files__add", "files__echo", "files__fail", "files__slow"]
    assert [t["function"].get("description") for t in model.last.json()["tools"]][0] is None


@pytest.mark.parametrize("value", ["off", "OFF", "none", "false"])
async def test_the_opt_out_header_gives_a_plain_relay(aiohttp_client, model, files_server, value):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(
            model="p/adder", messages=HI, extra_headers={"X-Gateway-MCP": value}
        )
    assert answer.choices[0].message.content == "results: "
    assert offered(model.last) == []
    assert "x-gateway-mcp" not in {name.lower() for name in model.last.headers}


async def test_a_policy_narrows_or_removes_the_tools(aiohttp_client, model, files_server, tmp_path):
    keys = write_keys(
        tmp_path,
        {"some": {"policy": "some"}, "none": {"policy": "none"}},
        {"some": {"mcp_tools": ["files__echo"]}, "none": {"mcp": False}},
    )
    gateway = await started(
        aiohttp_client, model, files_server, auth_enable=True, auth_keys_file=str(keys.path), disable_compression=True
    )
    async with sdk(gateway, keys.key("some")) as client:
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
    # files__add is not this client's: never offered, never run.
    assert offered(model.last) == ["files__echo"]
    assert answer.choices[0].message.content == "results: "
    async with sdk(gateway, keys.key("none")) as client:
        await client.chat.completions.create(model="p/adder", messages=HI)
    assert offered(model.last) == []


async def test_streamed_loop_is_one_stream_with_text_as_it_comes(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        stream = await client.chat.completions.create(
            model="p/adder", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me look. results: 5 "
    assert {c.id for c in chunks} == {"chatcmpl-0"}
    # No tool call of the gateway's reaches the client; one finish, one usage chunk with both turns summed.
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usage] == [(20, 4, 24)]
    assert model.requests[1].json()["messages"][1] == {
        "role": "assistant",
        "content": "Let me look. ",
        "tool_calls": [
            {"id": "call_0_0", "type": "function", "function": {"name": "files__add", "arguments": '{"a": 2, "b": 3}'}}
        ],
    }


async def test_streamed_bytes_show_the_tool_round_as_comments(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    response = await gateway.client.post(
        "/v1/chat/completions", json={"model": "p/adder", "messages": HI, "stream": True}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    raw = await response.read()
    events = raw.split(b"\n\n")
    assert b": mcp files__add running" in events
    assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"[DONE]") == 1
    assert b"tool_calls" not in raw
    # The provider was asked for usage on the gateway's account (stream_usage in the table): not relayed, counted.
    assert b'"usage"' not in raw
    (exchange,) = await gateway.settled()
    usage = exchange.scanner.usage
    assert (usage.input_tokens, usage.output_tokens) == (20, 4)


async def test_first_words_arrive_while_the_provider_still_holds_the_rest(aiohttp_client, model, files_server):
    model.held = asyncio.Event()
    gateway = await started(aiohttp_client, model, files_server)
    response = await gateway.client.post(
        "/v1/chat/completions", json={"model": "p/chatty", "messages": HI, "stream": True}
    )
    assert response.status == 200
    first = await asyncio.wait_for(response.content.readuntil(b"results"), 10)
    assert b'"content":"results' in first
    model.held.set()
    rest = await response.read()
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_streamed_client_calls_come_back_untouched(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server)
    async with sdk(gateway) as client:
        stream = await client.chat.completions.create(model="p/mixed", messages=HI, tools=[WEATHER], stream=True)
        chunks = [chunk async for chunk in stream]
    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.id, d.function.name, d.function.arguments) for d in deltas] == [
        (0, "call_0_1", "get_weather", '{"city": "Oslo"}')
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_metrics_and_log_lines(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server, base=telemetry_settings(), mcp_request_timeout=1.5)
    with captured_logs() as logs:
        async with sdk(gateway) as client:
            await client.chat.completions.create(model="p/pair", messages=HI)
            await client.chat.completions.create(model="p/failing", messages=HI)
            await client.chat.completions.create(model="p/sleepy", messages=HI)
        await gateway.settled(3)
    scraped = await samples(gateway.app)
    counted = {
        (labels["gen_ai_tool_name"], labels["outcome"]): value
        for labels, value in scraped.matching("llmgw_mcp_tool_calls_total", mcp_server="files")
    }
    assert counted == {
        ("files__add", "ok"): 1,
        ("files__echo", "ok"): 1,
        ("files__fail", "error"): 1,
        ("files__slow", "timeout"): 1,
    }
    duration = "gen_ai_execute_tool_duration_seconds_count"
    assert scraped.value(duration, gen_ai_tool_name="files__add", mcp_server="files", error_type="") == 1
    assert scraped.value(duration, gen_ai_tool_name="files__slow", mcp_server="files", error_type="timeout") == 1
    lines = events_named(logs, "mcp tool call")
    assert sorted((line["tool"], line["outcome"], line["arguments"]) for line in lines) == [
        ("files__add", "ok", ["a", "b"]),
        ("files__echo", "ok", ["text"]),
        ("files__fail", "error", ["reason"]),
        ("files__slow", "timeout", ["seconds"]),
    ]
    # Names of the arguments only: their values never reach the log.
    assert "no disk" not in repr(lines)


async def test_a_server_that_dies_and_returns(aiohttp_client, model, own_server):
    gateway = await started(aiohttp_client, model, own_server)
    hub = gateway.app[MCP]
    await asyncio.to_thread(own_server.stop)
    await wait_for(lambda: not hub.catalog, limit=15)
    async with sdk(gateway) as client:
        # Its tools are absent: the chat is a plain one.
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
        assert answer.choices[0].message.content == "results: "
        assert offered(model.last) == []
        await asyncio.to_thread(own_server.start)
        await wait_for(lambda: len(hub.catalog.tools) == 4, limit=15)
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
    assert answer.choices[0].message.content == "results: 5"


async def test_a_server_gone_under_a_call_gives_an_error_result(aiohttp_client, model, own_server):
    # Polled rarely: the catalog still holds the tools when the server is already gone.
    gateway = await started(aiohttp_client, model, own_server, mcp_polling_interval=60.0)
    hub = gateway.app[MCP]
    await asyncio.to_thread(own_server.stop)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
    assert answer.choices[0].message.content.startswith("results: error: the tool")
    (exchange,) = await gateway.settled()
    assert [run.outcome for run in exchange.tool_runs] == ["error"]
    # The failed call made the link look at once, without waiting for the next poll.
    await wait_for(lambda: not hub.catalog, limit=10)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_providers_refusal_reaches_the_client_as_it_came(aiohttp_client, model, files_server, stream):
    gateway = await started(aiohttp_client, model, files_server)
    body = {"model": "p/refused", "messages": HI, "stream": stream}
    response = await gateway.client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert orjson.loads(await response.read()) == REFUSAL


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_call_the_last_turn_was_not_offered_is_dropped_not_run(aiohttp_client, model, files_server, stream):
    gateway = await started(aiohttp_client, model, files_server, mcp_max_iterations=2)
    async with sdk(gateway) as client:
        if stream:
            chunks = [
                c async for c in await client.chat.completions.create(model="p/stubborn", messages=HI, stream=True)
            ]
            assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
            assert (
                "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Let me look. Let me look. "
            )
        else:
            answer = await client.chat.completions.create(model="p/stubborn", messages=HI)
            assert answer.choices[0].message.tool_calls == []
    (exchange,) = await gateway.settled()
    assert len(exchange.tool_runs) == 1 and len(model.requests) == 2


async def test_turns_are_read_unencoded_whatever_the_client_accepts(aiohttp_client, model, files_server):
    model.compress = True  # gzips every answer whose request accepts it (the SDK's requests do)
    # Compression passed through (CLIENT_DISABLE_COMPRESSION=false): a relay asks for the client's encodings.
    gateway = await started(aiohttp_client, model, files_server, disable_compression=False)
    async with sdk(gateway) as client:
        answer = await client.chat.completions.create(model="p/adder", messages=HI)
        stream = await client.chat.completions.create(model="p/adder", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert answer.choices[0].message.content == "results: 5"
    assert text == "Let me look. results: 5 "
    assert {seen.headers["Accept-Encoding"] for seen in model.requests} == {"identity"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_query_key_providers_refusal_is_scrubbed(aiohttp_client, model, files_server, stream):
    key = "AIza+query/key=0123456789-secret"
    table = table_of(entry("p", model.url + "/v1", "query", stream_usage=True), env={"P_API_KEY": key})
    gateway = await start_gateway(aiohttp_client, table, mcp_settings(files_server))
    await wait_for(lambda: len(gateway.app[MCP].catalog.tools) == 4, limit=15)
    body = {"model": "p/leaky", "messages": HI, "stream": stream}
    response = await gateway.client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    message = orjson.loads(await response.read())["error"]["message"]
    # The provider was offered the tools (a query-key provider gets them too) and echoed its URL: the key is out.
    assert offered(model.last) == FILES_TOOLS
    assert message.startswith("bad URL http://127.0.0.1:") and message.endswith("?key=[REDACTED]")


async def test_a_tool_the_policy_denies_is_never_run_even_when_called(aiohttp_client, model, files_server, tmp_path):
    keys = write_keys(tmp_path, {"adder": {"policy": "adder"}}, {"adder": {"mcp_tools": ["files__add"]}})
    gateway = await started(aiohttp_client, model, files_server, auth_enable=True, auth_keys_file=str(keys.path))
    async with sdk(gateway, keys.key("adder")) as client:
        # `stubborn` calls files__echo whether it was offered or not: not this client's, so it goes back to it.
        answer = await client.chat.completions.create(model="p/stubborn", messages=HI)
    assert offered(model.last) == ["files__add"]
    assert [c.function.name for c in answer.choices[0].message.tool_calls] == ["files__echo"]
    assert len(model.requests) == 1
    (exchange,) = await gateway.settled()
    assert exchange.tool_runs == []


async def test_a_long_tool_round_keeps_the_stream_alive(aiohttp_client, model, files_server, monkeypatch):
    monkeypatch.setattr(loop, "KEEPALIVE", 0.05)
    gateway = await started(aiohttp_client, model, files_server, mcp_request_timeout=1.5)
    response = await gateway.client.post(
        "/v1/chat/completions", json={"model": "p/sleepy", "messages": HI, "stream": True}
    )
    events = (await response.read()).split(b"\n\n")
    # The slow tool ran until its time-out; meanwhile the client read comments, then the answer.
    first = events.index(b": mcp files__slow running")
    assert events[first + 1] == b": mcp tools running"
    assert events[-2:] == [b"data: [DONE]", b""]


async def test_the_streamed_loop_stops_after_max_iterations(aiohttp_client, model, files_server):
    gateway = await started(aiohttp_client, model, files_server, mcp_max_iterations=3)
    async with sdk(gateway) as client:
        stream = await client.chat.completions.create(model="p/forever", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Let me look. Let me look. results: again | again "
    assert [offered(seen) for seen in model.requests] == [FILES_TOOLS, FILES_TOOLS, []]
