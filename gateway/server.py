"""Running the app: the listening socket (TLS when configured), uvloop, and a graceful stop on SIGTERM/SIGINT.

The first signal drains: /ready turns 503, the listener stays open for SERVER_SHUTDOWN_DELAY (so load balancers
can stop sending), then closes; requests and streams in flight finish within SERVER_DRAIN_TIMEOUT, counted from
the signal, and the process exits 0. A second signal cuts what is left and exits 1 at once.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import ssl

import structlog
from aiohttp import hdrs, web

from gateway.config.settings import Settings
from gateway.runtime.state import STATE

log = structlog.get_logger("gateway")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_DRAINED = 0
EXIT_FORCED = 1
# What a bind can fail with: the port taken, the address not this host's, a privileged port.
_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


class CannotListen(Exception):
    """A listener could not bind at start-up (its port taken, its address not this host's or unknown, a privileged
    port); `setting` names the variable that moves it."""

    def __init__(self, setting: str, host: str, port: int, exc: OSError) -> None:
        self.setting = setting
        self.errno = exc.errno
        # asyncio's bind error repeats the address in its strerror: the plain reason is enough.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or type(exc).__name__
        listener = " for /metrics" if setting == "TELEMETRY_METRICS_PORT" else ""
        super().__init__(f"cannot listen{listener} on {host}:{port} ({reason})")


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_path, settings.tls_key_path)
    return context


class StopSignals:
    """Counts stop signals: the first asks for a drain, any later one for an immediate stop."""

    def __init__(self) -> None:
        self.count = 0
        self.drain = asyncio.Event()
        self.force = asyncio.Event()

    def __call__(self, signum: signal.Signals) -> None:
        self.count += 1
        log.info("signal received", signal=signum.name, count=self.count)
        (self.drain if self.count == 1 else self.force).set()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self, signum)


async def close_connection_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, every answer says `Connection: close`, so clients move their pooled connections elsewhere."""
    if request.app[STATE].draining:
        # The hook runs after the headers are computed: say it, and make the connection act on it.
        response.headers[hdrs.CONNECTION] = "close"
        response.force_close()


async def drain(runner: web.AppRunner, app: web.Application, settings: Settings) -> None:
    """Turn unready, keep accepting for the shutdown delay, then close the listener and wait for what is in flight.

    `runner.cleanup()` closes the listening sockets, closes idle keep-alive connections, waits up to the runner's
    `shutdown_timeout` for handlers still running (then cancels them) and finally runs the app's cleanup_ctx,
    which closes the upstream session only after the last stream has ended.
    """
    app[STATE].draining = True
    log.info("draining", delay=settings.shutdown_delay, timeout=settings.drain_timeout)
    if settings.shutdown_delay > 0:
        # Endpoint controllers and load balancers learn of the stop at the same time we do; until they
        # have taken this pod out, new connections must still be answered (with /ready saying 503).
        await asyncio.sleep(settings.shutdown_delay)
    server = runner.server
    open_connections = len(server.connections) if server is not None else 0
    log.info("closing the listener", open_connections=open_connections)
    await runner.cleanup()


async def serve(app: web.Application, settings: Settings) -> int:
    """Serve until a stop signal; return the process exit status."""
    # Installed first: a SIGTERM that arrives during start-up drains once the listener is up.
    signals = StopSignals()
    signals.install(asyncio.get_running_loop())
    app.on_response_prepare.append(close_connection_while_draining)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=settings.idle_timeout,
        access_log=None,
        # What is left of the drain budget once the shutdown delay has passed.
        shutdown_timeout=settings.drain_timeout - settings.shutdown_delay,
    )
    try:
        # The app's start-up opens the /metrics listener (with TELEMETRY_ENABLE).
        await runner.setup()
    except OSError as exc:
        await runner.cleanup()
        if settings.telemetry_enable and (isinstance(exc, socket.gaierror) or exc.errno in _BIND_ERRORS):
            raise CannotListen("TELEMETRY_METRICS_PORT", settings.host, settings.telemetry_metrics_port, exc) from None
        raise
    # What start-up built lives as long as the process: keep it out of every later collection (docs/performance.md).
    gc.freeze()
    # A request's objects are freed by reference counting: young collections only re-walk those in flight.
    gc.set_threshold(10_000, 10, 10)
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=server_ssl_context(settings))
    try:
        await site.start()
    except OSError as exc:  # the port taken, the host not local or unknown: said in one line by __main__
        await runner.cleanup()
        raise CannotListen("SERVER_PORT", settings.host, settings.port, exc) from None
    scheme = "https" if settings.tls_enabled else "http"
    log.info("listening", url=f"{scheme}://{settings.host}:{settings.port}")
    await signals.drain.wait()
    async with asyncio.TaskGroup() as tasks:
        drained = tasks.create_task(drain(runner, app, settings))
        forced = tasks.create_task(signals.force.wait())
        await asyncio.wait((drained, forced), return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()
        forced.cancel()
    if drained.cancelled():
        # Whatever is still open is cancelled when the event loop closes behind us.
        log.warning("stopped at once on a second signal")
        return EXIT_FORCED
    log.info("stopped")
    return EXIT_DRAINED


def run(app: web.Application, settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(serve(app, settings))
    return uvloop.run(serve(app, settings))
