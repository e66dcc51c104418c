"""The provider connection pool: aiohttp's, with the spec's caps on *idle* connections (total and per host).

aiohttp can only cap connections in use, which would queue long streams behind each other; Go's
MaxIdleConns semantics (what the spec's settings mean) are kept by closing a released connection instead of
pooling it when the idle caps are reached.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey


class IdleCappedConnector(aiohttp.TCPConnector):
    def __init__(self, *, max_idle: int, max_idle_per_host: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_idle = max_idle
        self._max_idle_per_host = max_idle_per_host

    def _release(self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        if not should_close:
            idle_here = len(self._conns.get(key, ()))
            if (self._max_idle_per_host and idle_here >= self._max_idle_per_host) or (
                self._max_idle and sum(len(idle) for idle in self._conns.values()) >= self._max_idle
            ):
                should_close = True
        super()._release(key, protocol, should_close=should_close)

    @property
    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._conns.values())
