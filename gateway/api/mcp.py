"""`GET /v1/mcp/tools`: the MCP tools of the servers that are up, as the spec's ListToolsResponse, for the client
(its policy's tools only); 403 unless MCP_EXPOSE."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.access import auth
from gateway.errors import Forbidden
from gateway.mcp.catalog import offered
from gateway.mcp.hub import MCP
from gateway.runtime.state import STATE

# The spec's words (it calls the variable EXPOSE_MCP; MCP_EXPOSE, its settings' name, is read as well).
NOT_EXPOSED = "MCP tools endpoint is not exposed. Set EXPOSE_MCP=true to enable."


async def list_tools(request: web.Request) -> web.Response:
    hub = request.app.get(MCP)
    if hub is None or not request.app[STATE].settings.mcp_expose:
        raise Forbidden(NOT_EXPOSED, code="mcp_not_exposed")
    rules = auth.client_policy(request).mcp
    if not rules.enabled:
        raise Forbidden("MCP tools are not allowed for this client", code="mcp_not_allowed")
    tools = offered(hub.catalog, rules, frozenset())
    body = {"object": "list", "data": [tool.listed() for tool in tools.values()]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
