"""Translating a client request into the provider's: headers (the client's credentials out, the provider's in),
the model name in the body, and the URL of a raw /proxy call that may never leave the provider's base URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp.typedefs import RawHeaders
from yarl import URL

from gateway.config.providers import Provider
from gateway.errors import InvalidRequest

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never sent upstream: the client's credentials, its cookies, its address and the framing the gateway redoes.
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "content-length",
    "accept-encoding",
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "expect",
}


# The same names as the server's parser hands them over (bytes), for the hot path.
_NOT_FORWARDED_RAW = frozenset(name.encode() for name in NOT_FORWARDED)
# Connection options that name no header.
_NOT_HEADERS = frozenset({b"close", b""})


def upstream_headers(
    client: RawHeaders, provider: Provider, *, disable_compression: bool, request_id: str = ""
) -> list[tuple[bytes, bytes]]:
    """End-to-end client headers (the server's raw pairs), minus anything that could carry a credential, plus the
    provider's own, as (name, value) pairs. A line break in a value (which the server's parser already refuses) is
    refused by the transport before anything is sent."""
    pairs, encoding, hop = _forwarded(client, provider.header_names, request_id)
    if hop:
        # The client's Connection header declares more hop-by-hop headers (rare): they end at the gateway too.
        pairs, encoding, _ = _forwarded(client, provider.header_names | hop, request_id)
    # The body is relayed as raw bytes: only ask for an encoding the client itself accepts.
    pairs.append((b"Accept-Encoding", b"identity" if disable_compression or encoding is None else encoding))
    pairs += provider.headers
    if request_id:
        # The gateway's id (the client's own when it was sane), so provider-side logs can be matched with ours.
        pairs.append((b"X-Request-ID", request_id.encode()))
    return pairs


def _forwarded(
    client: RawHeaders, dropped: frozenset[bytes], request_id: str
) -> tuple[list[tuple[bytes, bytes]], bytes | None, frozenset[bytes]]:
    """The client's headers that travel on, its Accept-Encoding and the other hop-by-hop headers its Connection
    header names."""
    pairs: list[tuple[bytes, bytes]] = []
    encoding: bytes | None = None
    hop: frozenset[bytes] = frozenset()
    for pair in client:
        name, value = pair
        lowered = name.lower()
        if lowered in _NOT_FORWARDED_RAW or lowered in dropped:
            if lowered == b"accept-encoding":
                encoding = value if encoding is None else encoding
            elif lowered == b"connection":
                hop |= {t.strip().lower() for t in value.split(b",")} - _NOT_FORWARDED_RAW - _NOT_HEADERS
            continue
        if lowered == b"x-request-id" and request_id:
            continue
        pairs.append(pair)
    return pairs, encoding, hop - dropped


_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}}'


def request_body(
    raw: bytes, body: dict[str, Any], model: str, requested: str, provider_field: bool, ask_usage: bool = False
) -> bytes:
    """The client's bytes unchanged, unless the model name (`requested` -> `model`) or the `provider` field must
    change, or (`ask_usage`) the stream should end with a usage chunk and the client did not set `stream_options`."""
    inject = ask_usage and "stream_options" not in body
    if model == requested and not provider_field:
        if not inject:
            return raw
        # Only the option is missing: splice it in before the closing brace instead of re-encoding the body.
        end = raw.rstrip()
        if end.endswith(b"}"):
            return end[:-1] + _INCLUDE_USAGE
    rewritten = dict(body)
    rewritten["model"] = model
    rewritten.pop("provider", None)
    if inject:
        rewritten["stream_options"] = {"include_usage": True}
    return orjson.dumps(rewritten)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def proxy_url(provider: Provider, raw_tail: str, raw_query: str) -> URL:
    """The provider URL for `/proxy/{provider}/{raw_tail}`; 400 for anything that could escape its base URL."""
    decoded = raw_tail
    # Decode until stable so that %2e%2e and %252e%252e are judged as what they become.
    for _ in range(4):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise InvalidRequest("the proxied path is encoded too many times", code="invalid_path")
    segments = re.split(r"[/\\]", decoded)
    if (
        decoded.startswith(("/", "\\"))
        or _SCHEME.match(decoded)
        or any(s in (".", "..") for s in segments)
        or any(ord(c) < 0x20 or c == "\x7f" for c in decoded)
    ):
        raise InvalidRequest("the proxied path must stay under the provider's base URL", code="invalid_path")
    url = URL(f"{provider.base_url}/{raw_tail}", encoded=True)
    if raw_query or provider.query:
        query = [(k, v) for k, v in URL(f"?{raw_query}", encoded=True).query.items() if k != provider.secret_query]
        url = url.with_query(query + list(provider.query))
    return url
