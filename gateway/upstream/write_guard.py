"""SERVER_WRITE_TIMEOUT for relayed answers: a client that stops reading must not pin an upstream connection.

A timer looks at the connection a few times per limit, so the per-chunk loop pays nothing: when the socket has
refused more bytes (writing paused) and no byte was handed to it since, for the whole limit, the client's
connection is aborted; the relay then ends and releases its upstream connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

# Looks per limit: a stuck write is ended between 1 and 1 + 1/_TICKS limits after it stopped draining.
_TICKS = 4


class WriteGuard:
    __slots__ = ("_request", "_limit", "_on_stuck", "_handle", "_since", "_size")

    def __init__(self, request: web.BaseRequest, limit: float, on_stuck: Callable[[], None]) -> None:
        self._request = request
        self._limit = limit
        self._on_stuck = on_stuck
        self._since: float | None = None
        self._size = -1
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(limit / _TICKS, self._look)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self._handle = None
            return
        size = self._request.writer.output_size
        now = loop.time()
        if not self._request.protocol.writing_paused:
            self._since = None
        elif size != self._size or self._since is None:
            # Paused, but bytes moved since the last look: the silence starts now.
            self._since = now
        elif now - self._since >= self._limit:
            self._handle = None
            self._on_stuck()
            transport.abort()
            return
        self._size = size
        self._handle = loop.call_later(self._limit / _TICKS, self._look)
