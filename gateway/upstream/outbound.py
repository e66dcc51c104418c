"""Translating a client request into the provider's: headers (the client's credentials out, the provider's in),
the model name in the body, and the URL of a raw /proxy call that may never leave the provider's base URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
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


# What names the client's network path or picks who pays on the operator's key: never sent upstream unless the
# provider's table entry lists it in `forward_headers`.
IDENTITY = frozenset(
    {
        "openai-organization",
        "openai-project",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-uri",
        "x-forwarded-client-cert",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "true-client-ip",
        "x-client-ip",
        "client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "via",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)

# Inference routes forward only these of the client's headers (and the provider's `forward_headers`): content
# negotiation, idempotency, trace context, and the API-version and beta headers each dialect needs.
INFERENCE = frozenset(
    {
        "content-type",
        "content-encoding",
        "accept",
        "accept-language",
        "user-agent",
        "idempotency-key",
        "x-idempotency-key",
        "openai-beta",
        "anthropic-version",
        "anthropic-beta",
        "traceparent",
        "tracestate",
    }
)

# API-version and beta headers: a value the provider's entry sets (Anthropic's `anthropic-version`) is a default
# that the client's own, on an inference route, replaces, since the client knows which version its SDK speaks.
CLIENT_CHOSEN = frozenset({"anthropic-version", "anthropic-beta", "openai-beta"})

# The same names as the server's parser hands them over (bytes), for the hot path.
_CLIENT_CHOSEN_RAW = frozenset(name.encode() for name in CLIENT_CHOSEN)
_NOT_FORWARDED_RAW = frozenset(name.encode() for name in NOT_FORWARDED)
_IDENTITY_RAW = frozenset(name.encode() for name in IDENTITY)
_INFERENCE_RAW = frozenset(name.encode() for name in INFERENCE)
# Per table `forward_headers` set: the names an inference route keeps, and the names /proxy drops. Credentials and
# framing stay out whatever the table says. A table holds a handful of distinct sets, so the caches stay small.


@lru_cache(maxsize=64)
def _kept(extra: frozenset[bytes]) -> frozenset[bytes]:
    return (_INFERENCE_RAW | extra) - _NOT_FORWARDED_RAW


@lru_cache(maxsize=64)
def _defaults(names: frozenset[bytes]) -> frozenset[bytes]:
    return names & _CLIENT_CHOSEN_RAW


@lru_cache(maxsize=64)
def _dropped(extra: frozenset[bytes]) -> frozenset[bytes]:
    return _NOT_FORWARDED_RAW | (_IDENTITY_RAW - extra)


# Connection options that name no header.
_NOT_HEADERS = frozenset({b"close", b""})


def upstream_headers(
    client: RawHeaders,
    provider: Provider,
    *,
    disable_compression: bool,
    request_id: str = "",
    inference: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The client's headers that travel on, plus the provider's own, as (name, value) pairs. `inference`: only the
    allow-list INFERENCE and the provider's `forward_headers`; else (/proxy) everything end-to-end but credentials
    and the IDENTITY headers the table does not allow. A line break in a value (which the server's parser already
    refuses) is refused by the transport before anything is sent."""
    own: Sequence[tuple[bytes, bytes]] = provider.headers
    if inference:
        kept, defaults = _kept(provider.forward_headers), _defaults(provider.header_names)
        if not defaults:
            pairs, encoding = _kept_pairs(client, kept, provider.header_names)
        else:
            pairs, encoding = _kept_pairs(client, kept, provider.header_names - defaults)
            if chosen := {name.lower() for name, _ in pairs} & defaults:
                own = [pair for pair in own if pair[0].lower() not in chosen]
    else:
        dropped = _dropped(provider.forward_headers) | provider.header_names
        pairs, encoding, hop = _forwarded(client, dropped, request_id)
        if hop:
            # The client's Connection header declares more hop-by-hop headers (rare): they end at the gateway too.
            pairs, encoding, _ = _forwarded(client, dropped | hop, request_id)
    # The body is relayed as raw bytes: only ask for an encoding the client itself accepts.
    pairs.append((b"Accept-Encoding", b"identity" if disable_compression or encoding is None else encoding))
    pairs += own
    if request_id:
        # The gateway's id (the client's own when it was sane), so provider-side logs can be matched with ours.
        pairs.append((b"X-Request-ID", request_id.encode()))
    return pairs


def _kept_pairs(
    client: RawHeaders, kept: frozenset[bytes], replaced: frozenset[bytes]
) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The client's headers named in `kept` (and not set by the provider's entry), and its Accept-Encoding."""
    pairs: list[tuple[bytes, bytes]] = []
    encoding: bytes | None = None
    for pair in client:
        lowered = pair[0].lower()
        if lowered in kept:
            if lowered not in replaced:
                pairs.append(pair)
        elif lowered == b"accept-encoding" and encoding is None:
            encoding = pair[1]
    return pairs, encoding


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
    raw: bytes,
    body: dict[str, Any],
    model: str,
    requested: str,
    provider_field: bool,
    ask_usage: bool = False,
    rewrite: bool = False,
) -> bytes:
    """The client's bytes unchanged, unless the model name (`requested` -> `model`) or the `provider` field must
    change, (`ask_usage`) the stream should end with a usage chunk and the client did not set `stream_options`, or
    (`rewrite`) the gateway changed `body` itself (empty messages dropped)."""
    inject = ask_usage and "stream_options" not in body
    if model == requested and not provider_field and not rewrite:
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


def followup_url(provider: Provider, base: URL, tail: str, query: Iterable[tuple[str, str]]) -> URL:
    """`base` (an endpoint's URL, with the query the table gives it) with `/tail` after its path and the client's
    query parameters: all but `provider` (the gateway's) and any that could be read as the provider's key.
    `tail` is the gateway's to make safe (ids checked against a strict pattern)."""
    secret = provider.secret_query
    extra = [(k, v) for k, v in query if k != "provider" and (secret is None or not _names_secret(k, secret))]
    url = base.with_path(f"{base.raw_path.rstrip('/')}/{tail}", encoded=True)
    return url.with_query(list(base.query.items()) + extra)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_VERSION = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?")
_NOT_NAME = re.compile(r"[\x00-\x20\x7f]")


def _names_secret(name: str, secret: str) -> bool:
    """Whether a client's query parameter could be read as the provider's key parameter by some parser: compared
    without case, blanks or control bytes (`KEY=`, `key%00=`, ` key=`)."""
    return _NOT_NAME.sub("", name).lower() == secret.lower()


def proxy_url(provider: Provider, raw_tail: str, raw_query: str) -> URL:
    """The provider URL for `/proxy/{provider}/{raw_tail}`; 400 for anything that could escape its base URL.

    An SDK pointed at `/proxy/{provider}` adds its own version segment (`v1/messages`) to a base URL that already
    ends in it (`https://api.anthropic.com/v1`): the repeated segment is taken once."""
    version = provider.base_url.raw_path.rstrip("/").rpartition("/")[2]
    if version and _VERSION.fullmatch(version) and raw_tail.startswith(version + "/"):
        raw_tail = raw_tail[len(version) + 1 :]
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
        # `..;x` is `..` to servers that strip path parameters (Tomcat, some proxies).
        or any(s.partition(";")[0] in (".", "..") for s in segments)
        or any(ord(c) < 0x20 or c == "\x7f" for c in decoded)
    ):
        raise InvalidRequest("the proxied path must stay under the provider's base URL", code="invalid_path")
    url = URL(f"{provider.base_url}/{raw_tail}", encoded=True)
    if raw_query or provider.query:
        secret = provider.secret_query
        query = [
            (k, v)
            for k, v in URL(f"?{raw_query}", encoded=True).query.items()
            if secret is None or not _names_secret(k, secret)
        ]
        url = url.with_query(query + list(provider.query))
    return url
