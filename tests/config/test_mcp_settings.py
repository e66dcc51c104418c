"""The MCP_* settings: the spec's defaults, MCP_SERVERS entries (named or not), every bad value at once."""

from __future__ import annotations

import pytest

from gateway.config.settings import McpServer, Settings, parse_mcp_servers
from gateway.errors import ConfigError


def test_defaults_follow_the_spec() -> None:
    s = Settings.from_env({})
    assert (s.mcp_enable, s.mcp_expose, s.mcp_servers) == (False, False, ())
    assert (s.mcp_client_timeout, s.mcp_dial_timeout, s.mcp_tls_handshake_timeout) == (5.0, 3.0, 3.0)
    assert (s.mcp_response_header_timeout, s.mcp_expect_continue_timeout, s.mcp_request_timeout) == (3.0, 1.0, 5.0)
    assert (s.mcp_max_retries, s.mcp_retry_interval, s.mcp_initial_backoff) == (3, 5.0, 1.0)
    assert (s.mcp_enable_reconnect, s.mcp_reconnect_interval) == (True, 30.0)
    assert (s.mcp_polling_enable, s.mcp_polling_interval, s.mcp_polling_timeout) == (True, 30.0, 5.0)
    assert s.mcp_disable_healthcheck_logs is True
    assert (s.mcp_max_iterations, s.mcp_loop_timeout) == (10, 120.0)


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "MCP_ENABLE": "true",
            "EXPOSE_MCP": "yes",
            "MCP_SERVERS": "files=http://127.0.0.1:8083/mcp,https://search.internal:443/mcp",
            "MCP_REQUEST_TIMEOUT": "30s",
            "MCP_POLLING_ENABLE": "false",
            "MCP_MAX_ITERATIONS": "4",
            "MCP_LOOP_TIMEOUT": "1m",
        }
    )
    assert s.mcp_enable and s.mcp_expose and not s.mcp_polling_enable
    assert s.mcp_servers == (
        McpServer("files", "http://127.0.0.1:8083/mcp"),
        McpServer("search", "https://search.internal:443/mcp"),
    )
    assert (s.mcp_request_timeout, s.mcp_max_iterations, s.mcp_loop_timeout) == (30.0, 4, 60.0)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("http://mcp-files:8083/mcp", ["mcp-files"]),
        ("http://mcp.files.svc.cluster.local/mcp", ["mcp"]),
        ("http://10.1.2.3:80/mcp", ["mcp"]),
        ("a=http://h/x b=http://h/y", ["a", "b"]),
        ("web_search=http://h/x,  , git-hub=https://h/y", ["web_search", "git-hub"]),
    ],
)
def test_server_names(text: str, names: list[str]) -> None:
    servers, problems = parse_mcp_servers(text)
    assert problems == []
    assert [server.name for server in servers] == names


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "MCP_ENABLE": "true",
                "MCP_SERVERS": "a__b=http://h/x ftp://h/y c=http://h/1 c=http://h/2",
                "MCP_EXPOSE": "true",
                "EXPOSE_MCP": "false",
                "MCP_MAX_ITERATIONS": "0",
                "MCP_REQUEST_TIMEOUT": "soon",
            }
        )
    assert caught.value.problems == [
        "MCP_SERVERS: the name 'a__b' must be letters, digits, - and single _ (up to 24), to prefix tools",
        "MCP_SERVERS: 'ftp://h/y' is not an http:// or https:// URL",
        "MCP_SERVERS: two servers are named 'c'; name them (`name=url`)",
        "MCP_EXPOSE and EXPOSE_MCP disagree: set one of them",
        "MCP_REQUEST_TIMEOUT: not a duration: 'soon' (use e.g. 30s, 1m30s, 500ms)",
        "MCP_MAX_ITERATIONS: 0 is below the minimum 1",
    ]


def test_mcp_needs_a_server() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MCP_ENABLE": "true"})
    assert caught.value.problems == ["MCP_ENABLE needs MCP_SERVERS (at least one server URL)"]
