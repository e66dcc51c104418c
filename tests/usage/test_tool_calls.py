"""MCP tool calls in the usage store, end to end over both stores: a gateway with MCP on (the real MCP server, a
fake provider whose models call its tools) writes one row per call with its request's, and a request's record shows
them; arguments are never stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.mcp.hub import MCP
from gateway.usage.service import USAGE
from tests.fakes.gateways import start_gateway
from tests.fakes.mcp_servers import McpTestServer, mcp_server
from tests.fakes.net import wait_for
from tests.fakes.tables import one_provider
from tests.fakes.tool_models import ToolModel
from tests.fakes.usage import store_ready, written
from tests.mcp.conftest import mcp_settings

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def files_server() -> Iterator[McpTestServer]:
    with mcp_server() as server:
        yield server


async def test_each_tool_call_is_recorded_with_its_request(
    aiohttp_client: Any, aiohttp_server: Any, files_server: McpTestServer, store_url: Callable[[], str]
) -> None:
    model = await ToolModel().start(aiohttp_server)
    settings = mcp_settings(files_server, usage_store=store_url(), usage_api_enable=True, usage_flush_interval=0.02)
    gateway = await start_gateway(aiohttp_client, one_provider(model.url + "/v1"), settings)
    await store_ready(gateway.app)
    await wait_for(lambda: len(gateway.app[MCP].catalog.tools) == 4, limit=15)
    for name, request_id in (("pair", "with-tools"), ("failing", "failed-tool"), ("chatty", "no-tools")):
        body = {"model": f"p/{name}", "messages": HI, "stream": name == "failing"}
        response = await gateway.client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": request_id})
        assert response.status == 200
        await response.read()
    await written(gateway.app, 3)

    record = await (await gateway.client.get("/v1/requests/with-tools")).json()
    calls = sorted(record["tool_calls"], key=lambda c: c["tool"])
    assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [
        ("files", "files__add", "ok"),
        ("files", "files__echo", "ok"),
    ]
    for call in calls:
        assert 0 < call["duration_ms"] <= record["duration_ms"]
        assert call["time"] >= record["time"] and call["time"].endswith("Z")
    failed = await (await gateway.client.get("/v1/requests/failed-tool")).json()
    assert [(c["tool"], c["outcome"]) for c in failed["tool_calls"]] == [("files__fail", "error")]
    assert (await (await gateway.client.get("/v1/requests/no-tools")).json())["tool_calls"] == []

    # The Inference API's record, in its camelCase.
    envelope = await (await gateway.client.get("/api/v1/inference/requests/failed-tool")).json()
    (call,) = envelope["data"]["toolCalls"]
    assert set(call) == {"time", "server", "tool", "outcome", "durationMs"}

    # The arguments ("a": 1, "text": "hi", "reason": "no disk") are nowhere in the store.
    store = gateway.app[USAGE].store
    stored = repr(await store.fetch("SELECT * FROM usage_tool_calls", []))
    stored += repr(await store.fetch("SELECT * FROM usage_requests", []))
    assert "no disk" not in stored and "reason" not in stored and '"text"' not in stored
    assert len(await store.fetch("SELECT id FROM usage_tool_calls", [])) == 3
