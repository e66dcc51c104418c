"""The MCP tools as chat sees them: each server's tools under the name `<server>__<tool>`, their OpenAI function
definitions built once per discovery, and the per-request choice (the client's policy, the client's own tools).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.access.keys import ALL_TOOLS, ToolRules

# The prefix separator: server names never contain it (config/settings.py), so `<server>__<tool>` splits one way.
SEPARATOR = "__"
# OpenAI's rule for function names; a tool whose full name breaks it is not offered.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool of one server. `name` is the gateway's (`<server>__<tool>`), `tool` the server's own."""

    name: str
    tool: str
    server: str  # the server's name in MCP_SERVERS
    url: str  # the server's URL as shown to clients: no user, password or query
    description: str
    input_schema: Mapping[str, Any]
    # The entry of a chat request's `tools`, built once per discovery, not per request.
    definition: Mapping[str, Any] = field(compare=False)

    @classmethod
    def of(cls, server: str, url: str, tool: str, description: str | None, schema: Mapping[str, Any]) -> Tool:
        name = f"{server}{SEPARATOR}{tool}"
        text = description or ""
        parameters = dict(schema) if schema else {"type": "object", "properties": {}}
        definition = {"type": "function", "function": {"name": name, "description": text, "parameters": parameters}}
        return cls(name, tool, server, url, text, parameters, definition)

    def listed(self) -> dict[str, Any]:
        """The spec's MCPTool, as `GET /v1/mcp/tools` lists it."""
        return {
            "name": self.name,
            "description": self.description,
            "server": self.url,
            "input_schema": self.input_schema,
        }


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every tool of every server that is up, by the gateway's name. Replaced whole when a server's list changes,
    so a request reads one consistent catalog."""

    tools: Mapping[str, Tool] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tools)

    @classmethod
    def of(cls, tools: Iterable[Tool]) -> Catalog:
        return cls({tool.name: tool for tool in sorted(tools, key=lambda t: t.name)})


EMPTY = Catalog()


def client_tool_names(tools: Any) -> frozenset[str]:
    """The function names of a request's own `tools` (whatever else it holds is the provider's to judge)."""
    if not isinstance(tools, list):
        return frozenset()
    names = set()
    for entry in tools:
        if isinstance(entry, dict):
            function = entry.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.add(function["name"])
    return frozenset(names)


def offered(catalog: Catalog, rules: ToolRules, taken: frozenset[str]) -> dict[str, Tool]:
    """The tools one request gets: those the client's rules allow, minus any whose name the client's own tools
    already use (the client's tool wins: a call by that name goes back to the client)."""
    if rules is ALL_TOOLS and not taken:
        return dict(catalog.tools)
    return {name: tool for name, tool in catalog.tools.items() if name not in taken and rules.allows(name)}
