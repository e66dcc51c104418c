"""Connections and discovery: a real MCP server's tools at /v1/mcp/tools (Streamable HTTP and the SSE fallback),
the 403 unless exposed, a server down at start-up, dying and returning, per-key policies, the servers' metrics."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway.mcp.hub import MCP
from tests.fakes.access import write_keys
from tests.fakes.gateways import TINY, start_gateway, telemetry_settings
from tests.fakes.mcp_servers import McpTestServer, mcp_server
from tests.fakes.net import wait_for
from tests.fakes.tables import one_provider
from tests.fakes.telemetry import captured_logs, events_named, samples
from tests.mcp.conftest import mcp_settings

TOOLS = "/v1/mcp/tools"


def expected_tools(server: McpTestServer, prefix: str = "files") -> list[dict[str, Any]]:
    def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        schema = {"properties": properties, "required": required, "title": f"{name}Arguments", "type": "object"}
        return {"name": f"{prefix}__{name}", "description": description, "server": server.url, "input_schema": schema}

    return [
        tool(
            "add",
            "Add two integers.",
            {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
            ["a", "b"],
        ),
        tool("echo", "Say the text back.", {"text": {"title": "Text", "type": "string"}}, ["text"]),
        tool("fail", "Always fails.", {"reason": {"title": "Reason", "type": "string"}}, ["reason"]),
        tool(
            "slow",
            "Sleep for a while, then answer.",
            {"seconds": {"title": "Seconds", "type": "number"}},
            ["seconds"],
        ),
    ]


async def listed(gateway: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await gateway.client.get(TOOLS, headers=headers or {})
    return response.status, orjson.loads(await response.read())


async def wait_tools(gateway: Any, count: int) -> None:
    hub = gateway.app[MCP]
    await wait_for(lambda: len(hub.catalog.tools) == count, limit=15)


async def test_tools_listed_from_a_streamable_http_server(aiohttp_client, files_server):
    gateway = await start_gateway(aiohttp_client, one_provider("http://127.0.0.1:9"), mcp_settings(files_server))
    await wait_tools(gateway, 4)
    status, body = await listed(gateway)
    assert status == 200
    assert body == {"object": "list", "data": expected_tools(files_server)}
    assert gateway.app[MCP].links["files"].transport == "streamable_http"


async def test_sse_server_is_reached_through_the_fallback(aiohttp_client):
    with mcp_server(transport="sse", name="legacy") as server:
        gateway = await start_gateway(aiohttp_client, one_provider("http://127.0.0.1:9"), mcp_settings(server))
        await wait_tools(gateway, 4)
        status, body = await listed(gateway)
        # The gateway goes first: the SDK's SSE client leaves streams unclosed when its server vanishes under it.
        await gateway.client.close()
    assert status == 200
    assert [tool["name"] for tool in body["data"]] == ["legacy__add", "legacy__echo", "legacy__fail", "legacy__slow"]
    assert body["data"][0]["server"] == server.url
    assert gateway.app[MCP].links["legacy"].transport == "sse"


@pytest.mark.parametrize(
    "settings",
    [TINY, replace(TINY, mcp_enable=False, mcp_expose=True)],
    ids=["mcp-off", "expose-only"],
)
async def test_the_list_is_refused_while_mcp_is_off(aiohttp_client, settings):
    gateway = await start_gateway(aiohttp_client, one_provider("http://127.0.0.1:9"), settings)
    status, body = await listed(gateway)
    assert status == 403
    assert body == {
        "error": {
            "message": "MCP tools endpoint is not exposed. Set EXPOSE_MCP=true to enable.",
            "type": "permission_error",
            "code": "mcp_not_exposed",
        }
    }
    assert MCP not in gateway.app


async def test_the_list_is_refused_unless_exposed_while_chat_still_gets_the_tools(aiohttp_client, files_server):
    gateway = await start_gateway(
        aiohttp_client, one_provider("http://127.0.0.1:9"), mcp_settings(files_server, mcp_expose=False)
    )
    await wait_tools(gateway, 4)
    status, body = await listed(gateway)
    assert status == 403
    assert body["error"]["code"] == "mcp_not_exposed"


async def test_a_server_down_at_start_comes_later_dies_and_returns(aiohttp_client):
    server = McpTestServer()  # not started: nothing listens on its port yet
    settings = mcp_settings(server, base=telemetry_settings())
    with captured_logs() as logs:
        gateway = await start_gateway(aiohttp_client, one_provider("http://127.0.0.1:9"), settings)
        # Start-up did not wait for it, and the gateway answers meanwhile: no tools.
        assert (await gateway.client.get("/health")).status == 200
        await wait_for(lambda: gateway.app[MCP].links["files"].state == "down", limit=10)
        assert await listed(gateway) == (200, {"object": "list", "data": []})
        scraped = await samples(gateway.app)
        assert scraped.value("llmgw_mcp_server_up", server="files") == 0
        assert scraped.value("llmgw_mcp_tools", server="files") == 0
        assert scraped.value("llmgw_mcp_connection_failures_total", server="files") >= 1
        try:
            await asyncio.to_thread(server.start)
            await wait_tools(gateway, 4)
            scraped = await samples(gateway.app)
            assert scraped.value("llmgw_mcp_server_up", server="files") == 1
            assert scraped.value("llmgw_mcp_tools", server="files") == 4
            failures = scraped.value("llmgw_mcp_connection_failures_total", server="files")

            server.stop()  # the server dies: its tools go at the next poll
            await wait_tools(gateway, 0)
            assert await listed(gateway) == (200, {"object": "list", "data": []})
            scraped = await samples(gateway.app)
            assert scraped.value("llmgw_mcp_server_up", server="files") == 0
            assert scraped.value("llmgw_mcp_connection_failures_total", server="files") > failures

            await asyncio.to_thread(server.start)  # ... and returns on the same port
            await wait_tools(gateway, 4)
            status, body = await listed(gateway)
            assert status == 200
            assert body["data"] == expected_tools(server)
        finally:
            server.stop()
    down = events_named(logs, "mcp server down: its tools are absent until it returns")
    assert down and all(event["server"] == "files" and event["url"] == server.url for event in down)
    assert events_named(logs, "mcp server up")


async def test_a_policy_narrows_the_list_or_refuses_it(aiohttp_client, files_server, tmp_path):
    keys = write_keys(
        tmp_path,
        {"all": {}, "some": {"policy": "some"}, "none": {"policy": "none"}, "most": {"policy": "most"}},
        {
            "some": {"mcp_tools": ["files__add", "files__e*"]},
            "none": {"mcp": False},
            "most": {"denied_mcp_tools": ["*__fail", "*__slow"]},
        },
    )
    settings = mcp_settings(files_server, auth_enable=True, auth_keys_file=str(keys.path))
    gateway = await start_gateway(aiohttp_client, one_provider("http://127.0.0.1:9"), settings)
    await wait_tools(gateway, 4)

    def names(body: Any) -> list[str]:
        return [tool["name"] for tool in body["data"]]

    status, body = await listed(gateway, {"Authorization": f"Bearer {keys.key('all')}"})
    assert (status, len(body["data"])) == (200, 4)
    status, body = await listed(gateway, {"Authorization": f"Bearer {keys.key('some')}"})
    assert (status, names(body)) == (200, ["files__add", "files__echo"])
    status, body = await listed(gateway, {"Authorization": f"Bearer {keys.key('most')}"})
    assert (status, names(body)) == (200, ["files__add", "files__echo"])
    status, body = await listed(gateway, {"Authorization": f"Bearer {keys.key('none')}"})
    assert status == 403
    assert body["error"] == {
        "message": "MCP tools are not allowed for this client",
        "type": "permission_error",
        "code": "mcp_not_allowed",
    }
    status, body = await listed(gateway)
    assert status == 401
