"""A provider's key kept out of what the gateway relays: a provider whose key rides in the URL query
(`auth_type: query`) may echo that URL, in a redirect's Location or in an error body. The key, as is or
percent-encoded, becomes `[REDACTED]` in headers and in non-2xx bodies (decoded first when gzip or deflate).
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from urllib.parse import quote, quote_plus

from multidict import CIMultiDict
from yarl import URL

from gateway.config.providers import Provider
from gateway.exchange import Exchange
from gateway.upstream.transport import Response

__all__ = ["REDACTED", "SCRUBBED_MAX", "Unscrubbable", "query_secret", "scrub", "scrubbed_body", "scrubbed_head"]

# A non-2xx body of a provider with a key in its URL query is read whole, up to this size, to be scrubbed before any
# of it goes out; a larger one is cut rather than relayed unscrubbed (error bodies are small).
SCRUBBED_MAX = 1024 * 1024
REDACTED = b"[REDACTED]"


def query_secret(provider: Provider) -> bytes | None:
    """The key a provider carries in its URL query (`auth_type: query`), for `relay` to scrub; None without one."""
    name = provider.secret_query
    if name is None:
        return None
    for key, value in provider.query:
        if key == name and value:
            return value.encode()
    return None


def scrub(data: bytes, secret: bytes) -> bytes:
    """`data` with the key `secret`, as is or percent-encoded, replaced by [REDACTED]."""
    for form in _Secret.of(secret).forms:
        data = data.replace(form, REDACTED)
    return data


class Unscrubbable(Exception):
    """A non-2xx answer that cannot be scrubbed of the provider's key (too large, or in an unknown encoding)."""


class _Secret:
    """A provider's key in the forms it may be echoed in: as is, and percent-encoded as yarl puts it in the URL or
    as another encoder would (upper- and lower-case hex); longest first. Made once per key."""

    __slots__ = ("forms", "texts")

    def __init__(self, key: bytes) -> None:
        text = key.decode("utf-8", "surrogateescape")
        encoded = [
            URL.build(query={"k": text}).raw_query_string[2:],
            quote(text, safe=""),
            quote_plus(text, safe=""),
        ]
        forms = {key, *(form.encode() for form in encoded)}
        forms |= {_LOWER_HEX(lambda m: m[0].lower(), form) for form in forms}
        self.forms = tuple(sorted((form for form in forms if form), key=len, reverse=True))
        # Header values and reason phrases are bytes read as latin-1.
        self.texts = tuple(form.decode("latin-1") for form in self.forms)

    @staticmethod
    @lru_cache(maxsize=64)
    def of(key: bytes) -> _Secret:
        return _Secret(key)

    def scrub_text(self, value: str) -> str:
        for form in self.texts:
            value = value.replace(form, "[REDACTED]")
        return value

    def holds(self, value: str) -> bool:
        return any(form in value for form in self.texts)


_LOWER_HEX = re.compile(rb"%[0-9A-F]{2}").sub


def scrubbed_head(
    answer: Response, headers: CIMultiDict[str], exchange: Exchange, secret: bytes
) -> tuple[CIMultiDict[str], str]:
    """The relayed headers and reason phrase without the key."""
    known = _Secret.of(secret)
    if any(known.holds(value) for value in headers.values()):
        headers = CIMultiDict((name, known.scrub_text(value)) for name, value in headers.items())
    if exchange.upstream_request_id and known.holds(exchange.upstream_request_id):
        exchange.upstream_request_id = known.scrub_text(exchange.upstream_request_id)
    return headers, known.scrub_text(answer.reason)


def scrubbed_body(headers: CIMultiDict[str], body: bytes, secret: bytes) -> bytes:
    """A non-2xx body without the key; one compressed with gzip or deflate goes out decoded (its Content-Encoding
    dropped), one in another encoding is Unscrubbable."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding != "identity":
        body = _decoded(body, encoding)
        headers.popall("Content-Encoding")
    return scrub(body, secret)


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise Unscrubbable(f"a non-2xx body in {encoding[:32]!r}")
    # gzip or zlib by their headers; deflate is sometimes sent raw, without the zlib wrapper.
    for wbits in (32 + zlib.MAX_WBITS, -zlib.MAX_WBITS):
        decoder = zlib.decompressobj(wbits)
        try:
            data = decoder.decompress(body, SCRUBBED_MAX + 1)
        except zlib.error:
            continue
        if decoder.eof and len(data) <= SCRUBBED_MAX:
            return data
        break
    raise Unscrubbable(f"a non-2xx body in {encoding} that does not decode within {SCRUBBED_MAX} bytes")
