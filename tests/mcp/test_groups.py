"""The chat loop when the client's model is a model group: each turn routed as the group routes (the strategy's
order, the next deployment when one fails before its first byte), plain and streamed, with the real MCP server and
fake providers (tests/fakes/tool_models.py) as the group's deployments."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from gateway.mcp.hub import MCP
from gateway.runtime.state import STATE
from tests.fakes.gateways import start_gateway
from tests.fakes.net import wait_for
from tests.fakes.tables import group_table
from tests.fakes.tool_models import ToolModel
from tests.mcp.conftest import mcp_settings

FILES_TOOLS = ["files__add", "files__echo", "files__fail", "files__slow"]
HI = [{"role": "user", "content": "hi"}]
TOOL_ROUND = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0_0", "type": "function", "function": {"name": "files__add", "arguments": '{"a": 2, "b": 3}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_0_0", "content": "5"},
]


def offered(seen: Any) -> list[str]:
    return [tool["function"]["name"] for tool in seen.json().get("tools") or []]


class Group:
    """A gateway whose model `g` is deployments `a` then `b` (strategy `fallback`: the table's order), each a
    ToolModel serving the model `adder`."""

    def __init__(self, gateway: Any, a: ToolModel, b: ToolModel) -> None:
        self.gateway, self.a, self.b = gateway, a, b

    def sdk(self) -> openai.AsyncOpenAI:
        url = str(self.gateway.client.make_url("/v1"))
        return openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)

    def live(self, pid: str) -> Any:
        return self.gateway.app[STATE].fleet.live[(pid, "adder")]


@pytest.fixture
def group(aiohttp_server: Any, aiohttp_client: Any, files_server: Any) -> Any:
    async def make(a_fails: dict[int, int] | None = None, b_fails: dict[int, int] | None = None) -> Group:
        a = await ToolModel(fail=a_fails or {}).start(aiohttp_server)
        b = await ToolModel(fail=b_fails or {}).start(aiohttp_server)
        deployments = [{"provider": "a", "model": "adder"}, {"provider": "b", "model": "adder"}]
        table = group_table({"a": a.url + "/v1", "b": b.url + "/v1"}, {"g": {"deployments": deployments}})
        gateway = await start_gateway(aiohttp_client, table, mcp_settings(files_server, disable_compression=False))
        hub = gateway.app[MCP]
        await wait_for(lambda: len(hub.catalog.tools) == 4, limit=15)
        return Group(gateway, a, b)

    return make


async def test_a_groups_turn_falls_over_to_the_next_deployment(group):
    g = await group(a_fails={1: 503})
    async with g.sdk() as client:
        answer = await client.chat.completions.create(model="g", messages=HI)
    assert answer.choices[0].message.content == "results: 5"
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (20, 24)
    # Turn 1: a, with the MCP tools. Turn 2: a failed before its first byte (503), so b got the conversation.
    first, refused = g.a.requests
    (second,) = g.b.requests
    assert offered(first) == FILES_TOOLS and first.json()["model"] == "adder"
    assert refused.json()["messages"] == second.json()["messages"] == [*HI, *TOOL_ROUND]
    assert offered(second) == FILES_TOOLS
    # The loop reads each answer itself: it asks for it unencoded, whatever the client accepts.
    assert {seen.headers["Accept-Encoding"] for seen in (first, refused, second)} == {"identity"}
    (exchange,) = await g.gateway.settled()
    assert (exchange.group, exchange.strategy, exchange.provider, exchange.fallbacks) == ("g", "fallback", "b", 1)
    assert [(run.tool, run.outcome) for run in exchange.tool_runs] == [("files__add", "ok")]
    assert (g.live("a").served, g.live("a").failed, g.live("b").served) == (1, 1, 1)


async def test_a_streamed_groups_turns_are_one_stream(group):
    g = await group(a_fails={0: 429})
    async with g.sdk() as client:
        stream = await client.chat.completions.create(
            model="g", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me look. results: 5 "
    # b answered turn 1 (a was out of quota); a, first in the order again, turn 2: one id, one finish, one usage.
    assert {c.id for c in chunks} == {"chatcmpl-0"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert [u.total_tokens for c in chunks if (u := c.usage) is not None] == [24]
    said = {**TOOL_ROUND[0], "content": "Let me look. "}
    assert [seen.json()["messages"] for seen in g.a.requests] == [HI, [*HI, said, TOOL_ROUND[1]]]
    assert [seen.json()["messages"] for seen in g.b.requests] == [HI]
    (exchange,) = await g.gateway.settled()
    assert (exchange.provider, exchange.fallbacks) == ("a", 1)
    # Each turn fed its deployment's measurements (time to first token, output tokens), as a plain request would.
    for pid in ("a", "b"):
        measured = g.live(pid).measure
        assert (measured.samples, measured.output) == (1, 2.0)


async def test_a_later_turn_no_deployment_serves_is_the_groups_503(group):
    g = await group(a_fails={1: 503}, b_fails={0: 503})
    response = await g.gateway.client.post("/v1/chat/completions", json={"model": "g", "messages": HI})
    assert response.status == 503
    error = (await response.json())["error"]
    assert "a/adder: answered 503" in error["message"] and "b/adder: answered 503" in error["message"]
    # The tool round ran; the answer did not come.
    (exchange,) = await g.gateway.settled()
    assert [run.outcome for run in exchange.tool_runs] == ["ok"]


async def test_a_streamed_later_turn_no_deployment_serves_cuts_the_stream(group):
    g = await group(a_fails={1: 503}, b_fails={0: 503})
    body = {"model": "g", "messages": HI, "stream": True}
    response = await g.gateway.client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        while part := await response.content.readany():
            received += part
    # The first turn's words went out; the stream is cut, never ended as if whole.
    assert b"Let me look. " in received and b"[DONE]" not in received


async def test_the_opt_out_header_gives_a_groups_plain_relay(group):
    g = await group()
    async with g.sdk() as client:
        answer = await client.chat.completions.create(model="g", messages=HI, extra_headers={"X-Gateway-MCP": "off"})
    assert answer.choices[0].message.content == "results: "
    assert [offered(seen) for seen in g.a.requests] == [[]]
    assert "x-gateway-mcp" not in {name.lower() for name in g.a.requests[0].headers}
