"""The Grafana dashboard asks only for what the gateway exports, and shows all of it: every metric and label in its
queries is checked against a real gateway's /metrics after traffic (model groups, MCP tools and the usage store
included), and every exported family with samples must be on it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.providers import parse_table
from gateway.config.settings import McpServer
from gateway.exchange import EXCHANGE
from gateway.mcp.hub import MCP
from tests.fakes.bodies import chat
from tests.fakes.gateways import ROOT, gateway_app, telemetry_settings
from tests.fakes.mcp_servers import McpTestServer, mcp_server
from tests.fakes.net import free_port, wait_for
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import TELEMETRY_ENV, telemetry_table_yaml
from tests.fakes.telemetry import scrape
from tests.fakes.tool_models import ToolModel
from tests.mcp.conftest import mcp_settings

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
# A provider whose models call the MCP server's tools (tests/fakes/tool_models.py).
TOOLS_PROVIDER = """  tools:
    id: tools
    url: {url}/v1
    auth_type: none
    endpoints:
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
"""

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"})
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression and variable query in the dashboard, wherever it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def names_in(expr: str) -> tuple[set[str], set[tuple[str | None, str]]]:
    """(metric names, (metric or None, label) pairs) an expression uses."""
    labels: set[tuple[str | None, str]] = set()
    for metric, body in _SELECTOR.findall(_STRING.sub('""', expr)):
        labels |= {(metric or None, label) for label in _MATCHER_LABEL.findall(body)}
    metrics = set()
    for metric, label in _LABEL_VALUES.findall(expr):
        labels.add((metric, label))
        metrics.add(metric)
    stripped = _LABEL_VALUES.sub(" ", _STRING.sub(" ", expr))
    for _, group in _GROUPING.findall(stripped):
        labels |= {(None, label.strip()) for label in group.split(",") if label.strip()}
    stripped = _GROUPING.sub(" ", stripped)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\$\w+", " ", stripped)
    for match in _IDENT.finditer(stripped):
        word, rest = match.group(), stripped[match.end() :].lstrip()
        if word in _KEYWORDS or rest.startswith("(") or word.isdigit():
            continue
        metrics.add(word)
    return metrics, labels


def test_the_query_parser_finds_metrics_and_labels() -> None:
    metrics, labels = names_in(
        'histogram_quantile(0.95, sum by (le, route) (rate(a_b_bucket{x=~"$v", y!=""}[5m]))) / sum(c_total)'
    )
    assert metrics == {"a_b_bucket", "c_total"}
    assert labels == {("a_b_bucket", "x"), ("a_b_bucket", "y"), (None, "le"), (None, "route")}


@web.middleware
async def as_client(request: web.Request, handler: Any) -> web.StreamResponse:
    """Stands in for client auth, which names the caller on the exchange."""
    request[EXCHANGE].client_name = "team-a"
    response: web.StreamResponse = await handler(request)
    return response


@pytest.fixture(scope="module")
def files_server() -> Iterator[McpTestServer]:
    with mcp_server() as server:
        yield server


async def test_every_dashboard_query_names_an_exported_metric(
    aiohttp_server: Any, aiohttp_client: Any, files_server: McpTestServer, tmp_path: Path
) -> None:
    fake = await ChatProvider().start(aiohttp_server)
    tools = await ToolModel().start(aiohttp_server)
    # With a model group whose first deployment is down: its request falls over, and every routing series has one.
    group = (
        "\nmodels:\n  grouped:\n    deployments:\n"
        "      - {provider: down, model: x}\n      - {provider: fake, model: plain}\n"
    )
    yaml = telemetry_table_yaml(fake.port, free_port()) + TOOLS_PROVIDER.format(url=tools.url) + group
    table = parse_table(yaml, TELEMETRY_ENV, source="test.yaml")
    # MCP on, with one server up and one that never answers: every MCP series has samples.
    down = McpServer("gone", f"http://127.0.0.1:{free_port()}/mcp")
    settings = mcp_settings(files_server, base=telemetry_settings())
    # The usage store on (SQLite): the writer's series are exported and must be on the dashboard too.
    settings = replace(settings, mcp_servers=(*settings.mcp_servers, down), usage_store=str(tmp_path / "usage.db"))
    app = gateway_app(settings, table)
    app.middlewares.append(as_client)
    client = await aiohttp_client(app)
    await wait_for(lambda: len(app[MCP].catalog.tools) == 4, limit=15)
    traffic = (("fake/plain", False), ("fake/streamer", True), ("fake/fail", False), ("down/x", False))
    for model, stream in (*traffic, ("grouped", True), ("tools/pair", False), ("tools/failing", True)):
        async with client.post("/v1/chat/completions", data=orjson.dumps(chat(model, stream=stream))) as response:
            await response.read()
    await wait_for(lambda: app[MCP].links["gone"].connect_failures > 0, limit=15)
    fake.usage = {"prompt_tokens": True, "completion_tokens": 2}  # a report not believed: counted
    async with client.post("/v1/chat/completions", data=orjson.dumps(chat("fake/plain"))) as response:
        await response.read()
    exported: dict[str, set[str]] = {}  # sample name and family name -> label names
    families: set[str] = set()
    for family in text_string_to_metric_families(await scrape(app)):
        families.add(family.name)
        for sample in family.samples:
            for name in (sample.name, family.name):
                exported.setdefault(name, set()).update(sample.labels)
    all_labels = set().union(*exported.values())

    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    found = list(queries(dashboard))
    assert len(found) >= 20
    used: set[str] = set()
    for expr in found:
        metrics, labels = names_in(expr)
        assert metrics, expr
        for metric in metrics:
            assert metric in exported, f"{metric!r} in {expr!r} is not exported"
            used.add(metric)
        for owner, label in labels:
            known = exported[owner] if owner is not None else all_labels
            assert label in known, f"label {label!r} ({owner}) in {expr!r} is not exported"
    # The dashboard shows every family the gateway exports (suffixes aside).
    # prometheus_client's `_created` timestamps are a by-product, not series to chart.
    families = {family for family in families if not family.endswith("_created")}
    shown = {family for family in families for m in used if m == family or m.removeprefix(family) in _SUFFIXES}
    assert families - shown == set()
