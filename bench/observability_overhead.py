"""What observing a request costs: the per-request work (metrics, access line, request id, the usage store's sink)
timed directly, the
per-chunk content check, and the p50 of real requests through a gateway with and without the observer.

    PYTHONPATH=. .venv/bin/python bench/observability_overhead.py [requests]
"""

from __future__ import annotations

import asyncio
import io
import logging
import statistics
import sys
import time
import timeit

import aiohttp
import orjson
import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.exchange import Exchange, Usage
from gateway.telemetry import access_log
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.metrics import GatewayMetrics, ModelLabels
from gateway.telemetry.observe import request_id
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.usage.record import row
from gateway.usage.store import open_store
from gateway.usage.writer import Writer
from tests.fakes.gateways import telemetry_settings as settings
from tests.fakes.net import free_port as closed_port
from tests.fakes.providers import ChatProvider as ScriptedProvider
from tests.fakes.tables import telemetry_table as make_table


def per_call(label: str, fn: object, number: int = 20000) -> None:
    seconds = min(timeit.repeat(fn, number=number, repeat=5)) / number  # type: ignore[arg-type]
    print(f"  {label:<44} {seconds * 1e6:8.2f} us")


def unit_costs() -> None:
    table = make_table(1, 2)
    metrics = GatewayMetrics(ModelLabels.of((), table), lambda: table)
    exchange = Exchange(operation="chat", provider="fake", model="plain", stream=True, upstream_status=200)
    scanner = SseUsage()
    scanner.feed(b'data: {"usage":{"prompt_tokens":12,"completion_tokens":40}}\n')
    scanner.first_content_at = exchange.started + 0.2
    assert scanner.usage == Usage(12, 40)
    exchange.scanner, exchange.bytes_in, exchange.bytes_out = scanner, 120, 4000
    ended = exchange.started + 1.0
    print("per request:")
    per_call("request_id (generated)", lambda: request_id(None))
    per_call(
        "metrics.record (stream, usage, ttft, tpot)", lambda: metrics.record(exchange, "/v1/c", "POST", 200, ended)
    )
    plain = Exchange(operation="other")
    per_call("metrics.record (health check)", lambda: metrics.record(plain, "/health", "GET", 200, ended))
    # The usage store's sink: a capture on the writer's queue (the store itself is never touched here).
    writer = Writer(
        open_store(":memory:"),
        lambda: table,
        lambda v: v,
        capacity=10**7,
        batch=10**7,
        interval=1.0,
        operations=frozenset({"chat"}),
    )
    exchange.request_body = {"model": "plain", "messages": [], "metadata": {"source": "bench"}, "user": "u-1"}
    per_call("usage sink (capture, queued)", lambda: writer.sink(None, exchange, 200, ended))  # type: ignore[arg-type]
    per_call("usage sink (a probe: not recorded)", lambda: writer.sink(None, plain, 200, ended))  # type: ignore[arg-type]
    per_call("usage row (writer, off the request path)", lambda: row(writer.queue[0], table, writer.scrub))
    writer.queue.clear()

    class Req:
        method, path = "POST", "/v1/chat/completions"

    sink = io.StringIO()
    configure_logging("production", secrets={"sk-" + "x" * 40, "k" * 30}, stream=sink, cache=True)
    request = Req()
    per_call("access_log.write (JSON line, redacted)", lambda: access_log.write(request, exchange, 200, ended))  # type: ignore[arg-type]
    structlog.reset_defaults()
    logging.getLogger().handlers = []

    chunk = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"}}]}\n\n'
    print("per chunk (SseUsage.feed, 100-byte event):")

    def feed_found() -> None:
        scanner.feed(chunk)

    fresh = SseUsage()
    per_call("after the first content was seen", feed_found)

    def feed_searching() -> None:
        fresh.first_content_at = None
        fresh.feed(chunk)

    per_call("while still looking for content", feed_searching)
    per_call("JsonUsage.feed (for comparison)", lambda: JsonUsage().feed(chunk))


async def p50(observed: bool, count: int) -> float:
    fake = ScriptedProvider()
    upstream = web.AppRunner(fake.app(), access_log=None)
    await upstream.setup()
    site = web.TCPSite(upstream, "127.0.0.1", 0)
    await site.start()
    port = upstream.addresses[0][1]
    app = create_app(settings(telemetry_enable=observed), make_table(port, closed_port()))
    if not observed:
        app.middlewares.pop(1)  # the observer
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
    body = orjson.dumps({"model": "fake/plain", "messages": [{"role": "user", "content": "hi"}]})
    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(count + 200):
            start = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
            if i >= 200:  # warm-up
                times.append(time.perf_counter() - start)
    await runner.cleanup()
    await upstream.cleanup()
    return statistics.median(times)


async def end_to_end(count: int) -> None:
    configure_logging("production", stream=io.StringIO(), cache=True)
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(3):  # interleaved rounds, best p50 of each
        for observed in (False, True):
            results[observed].append(await p50(observed, count))
    without, with_ = min(results[False]), min(results[True])
    print(f"end to end, {count} sequential non-streamed chats, p50 (best of 3 rounds):")
    print(f"  without the observer {without * 1e3:.3f} ms, with metrics + access log {with_ * 1e3:.3f} ms")
    print(f"  added: {(with_ - without) * 1e3:.3f} ms")


if __name__ == "__main__":
    unit_costs()
    asyncio.run(end_to_end(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
