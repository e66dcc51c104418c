"""Running the app: the listening socket (TLS when configured), uvloop, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal
import ssl

import structlog
from aiohttp import web

from .settings import Settings

log = structlog.get_logger("gateway")


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_path, settings.tls_key_path)
    return context


async def serve(app: web.Application, settings: Settings) -> None:
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=settings.idle_timeout,
        access_log=None,
    )
    await runner.setup()
    # What start-up built lives as long as the process: keep it out of every later collection, where it made
    # each full collection a pause of about 20 ms.
    gc.freeze()
    # A request's objects are freed by reference counting; the few thousand alive at once (requests in
    # flight) crossed the default 700-allocation trigger constantly, and each young collection only re-walked
    # them. Collect young objects every 10,000 allocations instead.
    gc.set_threshold(10_000, 10, 10)
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=server_ssl_context(settings))
    await site.start()
    scheme = "https" if settings.tls_enabled else "http"
    log.info("listening", url=f"{scheme}://{settings.host}:{settings.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()


def run(app: web.Application, settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(serve(app, settings))
    else:
        uvloop.run(serve(app, settings))
