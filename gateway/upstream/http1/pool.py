"""The provider connection pool: keep-alive `Connection`s per origin, with the spec's caps on *idle*
connections (total and per host, Go's MaxIdleConns semantics), an idle timeout, an optional cap on open ones,
TLS, and outbound proxies (`HTTP(S)_PROXY`, `NO_PROXY`) through plain forwarding or a CONNECT tunnel.

Connections in use are never capped by the idle caps: a long stream never queues another request behind it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from yarl import URL

from gateway.upstream.http1.connection import Connection, Deadlines
from gateway.upstream.transport import ConnectFailed, ConnectTimedOut, InvalidAnswer, TLSFailed, TransportError

__all__ = ["Origin", "Pool", "proxy_problems"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# NO_PROXY matching as urllib does it (public, but absent from typeshed).
_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


def proxy_problems(env: Mapping[str, str]) -> list[str]:
    """Outbound proxy variables the pool cannot use, for start-up to refuse: only http:// proxies are spoken."""
    problems = []
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        value = (env.get(name) or "").strip()
        if value and "://" in value and not value.lower().startswith("http://"):
            problems.append(f"{name} must be an http:// proxy URL (a CONNECT tunnel carries TLS to the provider)")
    return problems


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a provider URL's requests go, worked out once per scheme/host/port."""

    key: tuple[str, str, int]
    host: str  # the provider's host, for TLS and the Host header
    host_header: str
    authority: str  # host:port, always with the port (a CONNECT target)
    tls: bool
    connect_to: tuple[str, int]  # the provider itself, or the proxy
    # Plain HTTP through a proxy: the request target is absolute and the proxy's credentials ride along.
    target_prefix: str = ""
    proxy_authorization: str | None = None
    tunnel: bool = False  # HTTPS through a proxy: CONNECT first, then TLS inside the tunnel


class Pool:
    def __init__(
        self,
        *,
        max_idle: int,
        max_idle_per_host: int,
        max_open: int = 0,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: dict[str, str] | None = None,
    ) -> None:
        self._max_idle = max_idle
        self._max_idle_per_host = max_idle_per_host
        self._max_open = max_open
        self._idle_timeout = idle_timeout
        self._ssl = ssl_context or ssl.create_default_context()
        self._proxies = urllib.request.getproxies_environment() if proxies is None else proxies
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._idle: dict[tuple[str, str, int], deque[Connection]] = {}
        self._idle_count = 0
        self._open = 0
        self._slots: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._deadlines = Deadlines()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the pool serves, asked once (a system call on 3.11; see docs/performance.md)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    @property
    def open_connections(self) -> int:
        """Connections in use or idle (the ones counted against `max_open`)."""
        return self._open

    def origin(self, url: URL) -> Origin:
        scheme, host = url.scheme, url.raw_host or ""
        port = url.port or _DEFAULT_PORTS.get(scheme, 80)
        key = (scheme, host, port)
        found = self._origins.get(key)
        if found is None:
            found = self._origins[key] = self._route(key)
        return found

    async def acquire(self, origin: Origin, connect_timeout: float | None) -> tuple[Connection, bool]:
        """A connection to `origin`, and whether it was reused from the idle set."""
        while True:
            idle = self._idle.get(origin.key)
            if idle:
                now = self.loop.time()
                while idle:
                    conn = idle.pop()
                    self._idle_count -= 1
                    if not conn.closed and now - conn.idle_since < self._idle_timeout:
                        return conn, True
                    self._drop(conn)
            # At the cap, an idle connection to another origin holds a slot no one uses: give it up first.
            if not self._max_open or self._open < self._max_open or self._close_one_idle():
                break
            await self._wait_for_slot(connect_timeout)
        self._open += 1
        try:
            return await self._connect(origin, connect_timeout), False
        except BaseException:
            self._open -= 1
            self._hand_on_slot()
            raise

    def release(self, conn: Connection) -> None:
        """Back to the idle set if it can serve again and the caps allow; closed otherwise."""
        if (
            conn.reusable
            and not self._closed
            and not (self._max_idle_per_host and len(self._idle.get(conn.key, ())) >= self._max_idle_per_host)
            and not (self._max_idle and self._idle_count >= self._max_idle)
        ):
            loop = self.loop
            conn.idle_since = loop.time()
            self._idle.setdefault(conn.key, deque()).append(conn)
            self._idle_count += 1
            if self._sweeper is None:
                self._sweeper = loop.call_later(self._idle_timeout, self._sweep)
            # Someone waiting for a slot may want exactly this connection, or the slot it holds.
            self._hand_on_slot()
            return
        self._drop(conn)

    def discard(self, conn: Connection) -> None:
        """A connection in an unknown state (cancelled or failed exchange): closed at once, never reused."""
        conn.abort()
        self._drop(conn)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            while idle:
                self._drop(idle.pop())
        self._idle_count = 0

    # internals

    def _drop(self, conn: Connection) -> None:
        conn.close()
        self._open -= 1
        self._hand_on_slot()

    def _hand_on_slot(self) -> None:
        while self._slots:
            waiter = self._slots.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait_for_slot(self, timeout: float | None) -> None:
        """Until a connection is released (to the idle set or closed); the caller looks again. Bounded by the
        connect limit: at the cap, a request waits no longer for a free connection than for a new one."""
        waiter = self.loop.create_future()
        self._slots.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._hand_on_slot()  # woken, then cancelled: the wake-up goes to the next in line
            if isinstance(exc, TimeoutError):
                raise ConnectTimedOut(
                    f"no free connection within {timeout:g}s ({self._max_open} open, the CLIENT_MAX_CONNS cap)"
                ) from None
            raise

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._idle_count -= 1
                self._drop(idle.popleft())
                return True
        return False

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest_allowed = loop.time() - self._idle_timeout
        for idle in self._idle.values():
            # Oldest first: each deque is appended to on release, so its left end is the longest idle.
            while idle and (idle[0].closed or idle[0].idle_since <= oldest_allowed):
                self._idle_count -= 1
                self._drop(idle.popleft())
        if self._idle_count and not self._closed:
            self._sweeper = loop.call_later(self._idle_timeout / 2, self._sweep)

    def _route(self, key: tuple[str, str, int]) -> Origin:
        scheme, host, port = key
        tls = scheme == "https"
        default = _DEFAULT_PORTS.get(scheme)
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        authority = f"{bracketed}:{port}"
        host_header = bracketed if port == default else authority
        proxy = self._proxies.get(scheme)
        if not proxy or _bypass(host, self._proxies):
            return Origin(key, host, host_header, authority, tls, (host, port))
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme != "http":
            raise ValueError(f"outbound proxy {parts.scheme}:// is not supported; use an http:// proxy")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = f"Basic {base64.b64encode(pair).decode()}"
        at = (parts.hostname or "", parts.port or 80)
        if tls:
            return Origin(key, host, host_header, authority, tls, at, proxy_authorization=authorization, tunnel=True)
        return Origin(key, host, host_header, authority, tls, at, f"{scheme}://{host_header}", authorization)

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        host, port = origin.connect_to
        direct_tls = origin.tls and not origin.tunnel
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(origin.key, self._deadlines, self),
                    host,
                    port,
                    ssl=self._ssl if direct_tls else None,
                    server_hostname=origin.host if direct_tls else None,
                )
                if origin.tunnel:
                    await self._tunnel(conn, origin)
        except TimeoutError:
            raise ConnectTimedOut(f"cannot connect within {timeout:g}s") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TLSFailed(f"TLS with the provider failed ({getattr(exc, 'reason', None) or exc})") from None
        except TransportError:
            raise
        except socket.gaierror:  # not the resolver's words ("Name or service not known"): the host, never a URL
            via = " (the outbound proxy)" if origin.tunnel or origin.target_prefix else ""
            raise ConnectFailed(f"cannot resolve {host}{via}") from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise ConnectFailed(f"cannot connect ({reason})") from None
        return conn

    async def _tunnel(self, conn: Connection, origin: Origin) -> None:
        """CONNECT through the proxy, then TLS with the provider inside the tunnel."""
        target = origin.authority
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if origin.proxy_authorization:
            lines.append(f"Proxy-Authorization: {origin.proxy_authorization}")
        try:
            conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), None, head_only=True)
            await conn.head()
        except BaseException:  # the connect limit cancels this wait too: never leave the proxy's socket open
            conn.abort()
            raise
        if conn.status != 200:
            conn.abort()
            raise ConnectFailed(f"cannot connect (the outbound proxy answered {conn.status})")
        assert conn.transport is not None
        conn.parser = None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(conn.transport, conn, self._ssl, server_hostname=origin.host)
        except BaseException:
            conn.abort()
            raise
        if tls is None:
            conn.abort()
            raise InvalidAnswer("TLS inside the proxy tunnel did not start")
        conn.transport = tls
