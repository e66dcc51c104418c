"""outbound.upstream_headers: the headers a provider receives, built from the client's headers and the table's
(pure function; the end-to-end forwarding is covered through a fake provider in test_chat and test_proxy)."""

from __future__ import annotations

import pytest
from yarl import URL

from gateway.config.providers import Provider, parse_table
from gateway.upstream.http1.client import request_head
from gateway.upstream.http1.pool import Pool
from gateway.upstream.outbound import followup_url, upstream_headers
from gateway.upstream.transport import InvalidHeader, gateway_error

TABLE = """
providers:
  acme:
    id: acme
    url: http://127.0.0.1:1/v1
    auth_type: {auth}
    auth_header: x-acme-key
    headers: {{Acme-Version: "2024-06-01", Accept-Encoding: br, X-Request-ID: from-the-table}}
    endpoints:
      models: {{name: list_models, method: GET, endpoint: /models}}
      chat: {{name: chat_completions, method: POST, endpoint: /chat/completions}}
"""


def provider(auth: str = "xheader") -> Provider:
    return parse_table(TABLE.format(auth=auth), {"ACME_API_KEY": "acme-secret-key"}).providers["acme"]


def client(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as aiohttp's parser hands them over (request.raw_headers)."""
    return tuple((name.encode(), value.encode()) for name, value in pairs)


def lines(pairs: list[tuple[bytes, bytes]]) -> list[str]:
    return [f"{name.decode()}: {value.decode()}" for name, value in pairs]


def test_client_headers_then_the_providers_then_encoding_and_id() -> None:
    block = upstream_headers(
        client(
            ("Content-Type", "application/json"),
            ("X-Custom", "kept"),
            ("Accept-Encoding", "gzip"),
            ("Authorization", "Bearer client-key"),
            ("X-Acme-Key", "client-supplied"),
            ("acme-version", "client-version"),
            ("Cookie", "a=b"),
            ("X-Request-ID", "client-id"),
        ),
        provider(),
        disable_compression=False,
        request_id="gateway-id",
    )
    assert lines(block) == [
        "Content-Type: application/json",
        "X-Custom: kept",
        # The client's encoding wins over the table's: the body is relayed as the client will read it.
        "Accept-Encoding: gzip",
        "Acme-Version: 2024-06-01",
        "x-acme-key: acme-secret-key",
        "X-Request-ID: gateway-id",
    ]


def test_identity_unless_the_client_accepts_more_and_compression_is_allowed() -> None:
    accepts = client(("Accept-Encoding", "gzip"))
    assert "Accept-Encoding: identity" in lines(upstream_headers(accepts, provider(), disable_compression=True))
    assert "Accept-Encoding: identity" in lines(upstream_headers(client(), provider(), disable_compression=False))


def test_connection_named_headers_are_dropped() -> None:
    block = upstream_headers(
        client(
            ("X-Hop", "1"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-End", "2"),
            ("Connection", "x-other"),
            ("X-Other", "3"),
        ),
        provider("none"),
        disable_compression=True,
        request_id="rid",
    )
    assert lines(block) == ["X-End: 2", "Accept-Encoding: identity", "Acme-Version: 2024-06-01", "X-Request-ID: rid"]


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_line_break_in_a_client_header_is_refused_before_anything_is_sent(value: str) -> None:
    pairs = upstream_headers(client(("X-Custom", value)), provider(), disable_compression=True, request_id="rid")
    url = URL("http://127.0.0.1:1/v1/chat/completions")
    with pytest.raises(InvalidHeader) as caught:
        request_head("POST", url, Pool(max_idle=1, max_idle_per_host=1).origin(url), pairs, b"{}")
    error = gateway_error(caught.value)
    assert (error.status, error.code, error.message) == (400, "invalid_header", "a request header holds a line break")


NATIVE = """
providers:
  claude:
    id: claude
    url: http://127.0.0.1:1/v1
    auth_type: xheader
    headers: {anthropic-version: "2023-06-01"}
    endpoints:
      messages: {name: messages, method: POST, endpoint: /messages}
  keyed:
    id: keyed
    url: http://127.0.0.1:1/v1
    auth_type: query
    auth_query: key
    endpoints:
      responses: {name: responses, method: POST, endpoint: "/responses?api-version=2025-01-01"}
"""


def native(pid: str) -> Provider:
    return parse_table(NATIVE, {"CLAUDE_API_KEY": "provider-key", "KEYED_API_KEY": "q-secret"}).providers[pid]


def test_the_clients_version_header_replaces_the_tables_default_on_inference_routes_only() -> None:
    sent = client(("anthropic-version", "2099-01-01"), ("anthropic-beta", "b1"), ("x-api-key", "client-key"))
    inference = lines(upstream_headers(sent, native("claude"), disable_compression=True, inference=True))
    assert inference == [
        "anthropic-version: 2099-01-01",
        "anthropic-beta: b1",
        "Accept-Encoding: identity",
        "x-api-key: provider-key",
    ]
    # Without the client's, the table's default; on /proxy the table's value stands, as for every table header.
    alone = lines(upstream_headers(client(), native("claude"), disable_compression=True, inference=True))
    assert alone == ["Accept-Encoding: identity", "anthropic-version: 2023-06-01", "x-api-key: provider-key"]
    proxied = lines(upstream_headers(sent, native("claude"), disable_compression=True))
    assert "anthropic-version: 2023-06-01" in proxied and "anthropic-version: 2099-01-01" not in proxied


def test_a_follow_up_url_keeps_the_endpoints_query_and_the_clients_but_provider_and_the_key() -> None:
    keyed = native("keyed")
    base = keyed.endpoints["responses"].url
    url = followup_url(keyed, base, "resp_1/input_items", [("limit", "5"), ("provider", "keyed"), ("KEY", "mine")])
    assert url.raw_path == "/v1/responses/resp_1/input_items"
    assert list(url.query.items()) == [("api-version", "2025-01-01"), ("key", "q-secret"), ("limit", "5")]
