"""Soak: hundreds of concurrent streams against fake providers that fail at random, with clients that hang up at
random. Afterwards every request has ended (a stream the provider broke off is cut for its client too), no
handler, task or upstream connection is left, and the memory Python holds is back near where it started.

Short by default (as `make test` runs it). SOAK_STREAMS (per round, default 300) and SOAK_ROUNDS (default 1)
make it longer; `pytest -m soak -s tests/process/test_soak.py` prints the figures.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.upstream.call import TRANSPORT
from tests.fakes.bodies import CHAT, DONE, chat
from tests.fakes.gateways import ROOT, TINY, start_gateway
from tests.fakes.net import free_port
from tests.fakes.providers import FlakyProvider
from tests.fakes.tables import entry, table_of

pytestmark = pytest.mark.soak

STREAMS = int(os.environ.get("SOAK_STREAMS", "300"))
ROUNDS = int(os.environ.get("SOAK_ROUNDS", "1"))
EVENTS = 20


async def one_client(http: aiohttp.ClientSession, url: str, rng: random.Random, model: str) -> str:
    """One streamed request; some clients hang up after a few events. Returns how it ended."""
    hang_up_after = rng.randrange(1, EVENTS) if rng.random() < 0.2 else None
    async with http.post(url, json=chat(model, stream=True)) as response:
        if response.status != 200:
            await response.read()
            return f"status {response.status}"
        received = b""
        events = 0
        try:
            async for piece in response.content.iter_any():
                received += piece
                events = received.count(b"\n\n")
                if hang_up_after is not None and events >= hang_up_after:
                    response.close()
                    return "client hung up"
        except aiohttp.ClientPayloadError:
            # The provider broke off (reset, silence): the gateway cuts the client's stream too, never a clean end.
            return "cut"
        return "completed" if received.endswith(DONE) else "ended early, cleanly"


async def soak_round(http: aiohttp.ClientSession, url: str, rng: random.Random, count: int) -> collections.Counter[str]:
    models = ["a/m", "b/m"]
    results = await asyncio.gather(
        *(one_client(http, url, rng, models[n % 2]) for n in range(count)), return_exceptions=True
    )
    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert not unexpected, unexpected[:3]
    return collections.Counter(str(r) for r in results)


def handler_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "_handle_request" in repr(t.get_coro())]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def test_soak_concurrent_streams_with_failures_and_hang_ups(aiohttp_client, aiohttp_server) -> None:
    flaky_a, flaky_b = FlakyProvider(seed=1, events=EVENTS), FlakyProvider(seed=2, events=EVENTS)
    a = await flaky_a.start(aiohttp_server)
    b = await flaky_b.start(aiohttp_server)
    table = table_of(entry("a", a.url), entry("b", b.url, retries={"max_retries": 1}))
    gw = await start_gateway(
        aiohttp_client,
        table,
        TINY,
        # Hundreds of connects at once overflow the fake provider's listen backlog (a SYN is retried after 1 s).
        connect_timeout=10,
        response_header_timeout=5,
        stream_idle_timeout=0.3,
        write_timeout=2,
        # Idle pooled upstream connections close soon, so "nothing left open" can be checked at the end.
        idle_conn_timeout=0.3,
        max_retries=2,
        client_timeout=5,
    )
    url = str(gw.client.make_url(CHAT))
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        # A first round at full size sets every table and buffer at its high-water mark; memory is measured after.
        warm = await soak_round(http, url, rng, STREAMS)
        await _settle(gw, flaky_a, flaky_b, expected=sum(warm.values()))
        gw.exchanges.clear()
        gc.collect()
        tracemalloc.start(int(os.environ.get("SOAK_TRACE", "1")))
        try:
            start_traced = tracemalloc.get_traced_memory()[0]
            before = tracemalloc.take_snapshot() if os.environ.get("SOAK_TRACE") else None
            start_rss = rss_mib()
            began = time.monotonic()
            outcomes: collections.Counter[str] = collections.Counter()
            for _ in range(ROUNDS):
                outcomes += await soak_round(http, url, rng, STREAMS)
            elapsed = time.monotonic() - began
            await _settle(gw, flaky_a, flaky_b, expected=STREAMS * ROUNDS)
            # The test's own record of every request is not the gateway's memory.
            retried = sum(1 for e in gw.exchanges if e.retries)
            gw.exchanges.clear()
            gc.collect()
            end_traced, peak_traced = tracemalloc.get_traced_memory()
            if os.environ.get("SOAK_TRACE"):
                for stat in tracemalloc.take_snapshot().compare_to(before, "lineno")[:12]:
                    print(stat, *stat.traceback.format()[-6:], sep="\n  ")
        finally:
            tracemalloc.stop()

    total = STREAMS * ROUNDS
    assert sum(outcomes.values()) == total
    # Every way a request may end is one of these; each occurred.
    assert set(outcomes) <= {"completed", "ended early, cleanly", "cut", "client hung up", "status 503", "status 504"}
    assert {"completed", "cut", "client hung up", "status 504"} <= set(outcomes)
    assert retried > 0
    growth = (end_traced - start_traced) / 1024 / 1024
    print(
        f"\nsoak: {total} streams in {ROUNDS} rounds of {STREAMS} concurrent, {elapsed:.1f}s; outcomes {dict(outcomes)}"
        f"\n  providers did {dict(flaky_a.seen + flaky_b.seen)}; {retried} requests retried"
        f"\n  Python heap (tracemalloc): {growth:+.2f} MiB after the run, peak {peak_traced / 2**20:.1f} MiB"
        f"\n  RSS {start_rss:.1f} -> {rss_mib():.1f} MiB (max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f})"  # noqa: E501
    )
    # Memory back near its starting level: what stays is caches (a few hundred KiB), not per-request leftovers.
    assert growth < 2.0


async def _settle(gw: Any, *providers: FlakyProvider, expected: int) -> None:
    """Bounded wait until everything the run started has ended, then check that nothing is left."""
    pool = gw.app[TRANSPORT].pool  # type: ignore[attr-defined]
    for _ in range(1000):
        done = (
            len(gw.exchanges) >= expected
            and not handler_tasks()
            and all(p.in_flight == 0 for p in providers)
            and pool.open_connections == 0  # idle pooled connections closed too (after CLIENT_IDLE_CONN_TIMEOUT)
        )
        if done:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(
        f"left over: {expected - len(gw.exchanges)} gateway requests, {len(handler_tasks())} handler tasks, "
        f"{[p.in_flight for p in providers]} provider requests, {pool.open_connections} upstream connections, "
        f"{pool.idle_connections} of them pooled"
    )


def process_figures(pid: int) -> tuple[float, int]:
    """A process's resident memory (MiB) and open file descriptors (sockets included)."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def test_soak_a_gateway_process(aiohttp_server, tmp_path) -> None:
    """The same load against `python -m gateway` (uvloop, as deployed), measured from outside: its open sockets
    return to their count before the load, and its memory stays near where the first full round left it."""
    flaky_a, flaky_b = FlakyProvider(seed=3, events=EVENTS), FlakyProvider(seed=4, events=EVENTS)
    a = await flaky_a.start(aiohttp_server)
    b = await flaky_b.start(aiohttp_server)
    path = tmp_path / "providers.yaml"
    path.write_text(orjson.dumps({"providers": {"a": entry("a", a.url), "b": entry("b", b.url)}}).decode())
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "CLIENT_CONNECT_TIMEOUT": "10s",
        "CLIENT_RESPONSE_HEADER_TIMEOUT": "5s",
        "CLIENT_STREAM_IDLE_TIMEOUT": "1s",
        "CLIENT_IDLE_CONN_TIMEOUT": "300ms",
        "CLIENT_RETRY_BACKOFF": "10ms",
    }
    command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--providers", str(path)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await _listening(port, process)
        url = f"http://127.0.0.1:{port}{CHAT}"
        rng = random.Random(11)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            await soak_round(http, url, rng, STREAMS)
            start_rss, start_fds = await _quiet_process(process.pid, flaky_a, flaky_b)
            began = time.monotonic()
            outcomes: collections.Counter[str] = collections.Counter()
            for _ in range(ROUNDS):
                outcomes += await soak_round(http, url, rng, STREAMS)
            elapsed = time.monotonic() - began
            end_rss, end_fds = await _quiet_process(process.pid, flaky_a, flaky_b, expect_fds=start_fds)
    finally:
        process.terminate()
        _, errors = await asyncio.wait_for(process.communicate(), timeout=20)
    print(
        f"\nsoak (gateway process): {STREAMS * ROUNDS} streams, {STREAMS} concurrent, {elapsed:.1f}s; "
        f"outcomes {dict(outcomes)}"
        f"\n  gateway RSS {start_rss:.1f} -> {end_rss:.1f} MiB, open fds {start_fds} -> {end_fds}"
    )
    assert set(outcomes) <= {"completed", "ended early, cleanly", "cut", "client hung up", "status 503", "status 504"}
    assert end_fds <= start_fds
    # After a first round at full size, more of the same hardly moves the resident size.
    assert end_rss < start_rss * 1.15 + 5
    assert process.returncode == 0
    assert b"Traceback" not in errors


async def _listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(400):
        assert process.returncode is None, f"the gateway exited with {process.returncode}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listened on {port}")


async def _quiet_process(pid: int, *providers: FlakyProvider, expect_fds: int | None = None) -> tuple[float, int]:
    """Bounded wait until the providers serve nothing and the gateway's sockets stop closing (pooled upstream
    connections expire after CLIENT_IDLE_CONN_TIMEOUT); then its figures."""
    last = process_figures(pid)
    steady = 0
    for _ in range(500):
        await asyncio.sleep(0.05)
        now = process_figures(pid)
        idle = all(p.in_flight == 0 for p in providers)
        steady = steady + 1 if idle and now[1] == last[1] else 0
        last = now
        if steady >= 20 and (expect_fds is None or now[1] <= expect_fds):
            return now
    return last
