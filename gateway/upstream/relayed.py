"""The response objects of a relayed answer: aiohttp's, less the Content-Type they would add on their own.

aiohttp gives every non-empty body `application/octet-stream` when it has no Content-Type (RFC 9110 8.3 lets a
sender omit the field); a provider that sent none means none, and the client gets what the provider sent.
"""

from __future__ import annotations

from aiohttp import hdrs, web


class RelayedStream(web.StreamResponse):
    async def _prepare_headers(self) -> None:
        typed = hdrs.CONTENT_TYPE in self._headers
        await super()._prepare_headers()
        if not typed:
            self._headers.popall(hdrs.CONTENT_TYPE, None)


class RelayedWhole(RelayedStream, web.Response):
    """A whole answer written at once; the same rule."""
