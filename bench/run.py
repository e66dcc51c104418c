"""`python -m bench.run [--smoke]`: the gateway's benchmark, against direct and nginx in the same run.

Core 0 runs the one thing under test (nginx's one worker, or one gateway process); core 1 runs the mock upstream,
wrk, the stream client and this runner. Each scenario runs against every target in turn, repeated; the table
shows medians with min-max. `--smoke` runs each scenario once, briefly, and checks only correctness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from . import hotpath, load, noise, streams, tables
from .report import Figures, Row, machine, median, paired, table, write
from .targets import (
    BENCH_DIR,
    Processes,
    Target,
    awake,
    rss_mb,
    start_alone,
    start_floor,
    start_gateway,
    start_mock,
    start_nginx,
)

SMALL_BODY = b'{"model":"bench-small","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
PLAIN = "mode=plain"
FIRST_TOKEN = "mode=sse;first=50;n=20;gap=5"  # scenario 3: 50 ms to the first token, then a token every 5 ms
UNPACED = "mode=sse;first=0;n=50;gap=0"  # scenario 3: 50 chunks as fast as they come
BIG_RESPONSE = "mode=big;size=65536"
HOT = "gateway's own work per request, no I/O"
STALL_FACTOR = 2  # a gap over twice the upstream's pace is a stall


@dataclass(frozen=True, slots=True)
class Plan:
    reps: int
    seconds: int  # each wrk run
    sweep: tuple[int, ...]  # concurrencies tried for "highest rate with p99 < 20 ms"
    first_token_streams: int
    stream_concurrency: int
    slow_streams: int
    slow_events: int
    slow_gap_ms: int
    warm_up: bool
    patience: float  # seconds to wait, before each measurement, for other processes to leave the cores alone
    ramp: float  # seconds over which the slow streams' connections are opened


FULL = Plan(3, 3, (4, 8, 16, 32, 64, 128, 256), 60, 32, 1000, 50, 200, True, 10, 1.0)
SMOKE = Plan(1, 1, (), 5, 8, 20, 3, 100, False, 0, 0.1)  # the sweep is scenario 2's c=64 run again: skipped
QUIET = 0.1  # cores of outside load under which the machine counts as quiet
P99_LIMIT_MS = 20.0


class Bench:
    def __init__(self, plan: Plan, workdir: Path, load_cpu: int | None) -> None:
        self.plan = plan
        self.cpu = load_cpu
        self.figures = Figures()
        self.outside: list[float] = []  # cores used by other processes during each measurement
        self.small = workdir / "small.json"
        self.small.write_bytes(SMALL_BODY)
        self.large = workdir / "large.json"
        pad = b"x" * (1024 * 1024 - 100)
        self.large.write_bytes(b'{"model":"bench-large","messages":[{"role":"user","content":"' + pad + b'"}]}')

    def problem(self, target: Target, text: str) -> None:
        self.figures.problems.append(f"{target.name}: {text}")

    def wrk(self, target: Target, body: Path, mode: str, connections: int) -> load.WrkResult:
        result = load.wrk(target, body, mode, connections, self.plan.seconds, self.cpu)
        if result.errors or not result.requests:
            self.problem(target, f"{result.errors} errors in {result.requests} requests ({mode}, c={connections})")
        return result

    # 1. added latency at concurrency 1, small plain answer
    def latency(self, target: Target) -> None:
        result = self.wrk(target, self.small, PLAIN, 1)
        self.figures.add("c1 p50", target.name, result.p50_ms)
        self.figures.add("c1 p99", target.name, result.p99_ms)

    # 2. plain throughput at concurrency 64, and the highest rate with p99 under 20 ms
    def throughput(self, target: Target) -> None:
        result = self.wrk(target, self.small, PLAIN, 64)
        self.figures.add("c64 rate", target.name, result.rate)
        self.figures.add("CPU per request, c=64", target.name, result.cpu_us)

    def sweep(self, target: Target) -> None:
        if not self.plan.sweep:
            return
        best, at = 0.0, 0
        for connections in self.plan.sweep:
            result = self.wrk(target, self.small, PLAIN, connections)
            if result.p99_ms >= P99_LIMIT_MS:
                break
            if result.rate > best:
                best, at = result.rate, connections
        self.figures.add("best rate, p99 < 20 ms", target.name, best)
        self.figures.add("…at concurrency", target.name, at)

    # 3. streams: first byte, gaps between chunks, streams per second
    def first_token(self, target: Target) -> None:
        results = asyncio.run(
            streams.sequential(target.port, target.path, SMALL_BODY, FIRST_TOKEN, self.plan.first_token_streams, 60)
        )
        self._check_streams(target, results, 20)
        ttfb = sorted(r.ttfb * 1000 for r in results if r.done)
        gaps = sorted(g * 1000 for r in results if r.done for g in r.gaps)
        if ttfb and gaps:
            self.figures.add("TTFB p50", target.name, median(ttfb))
            self.figures.add("TTFB p99", target.name, _percentile(ttfb, 99))
            self.figures.add("chunk gap p99", target.name, _percentile(gaps, 99))

    def stream_rate(self, target: Target) -> None:
        result = self.wrk(target, self.small, UNPACED, self.plan.stream_concurrency)
        self.figures.add("50-chunk streams", target.name, result.rate)
        self.figures.add("CPU per 50-chunk stream", target.name, result.cpu_us)

    # 4. many concurrent slow streams
    def slow_streams(self, target: Target) -> None:
        plan = self.plan
        mode = f"mode=sse;first={plan.slow_gap_ms};n={plan.slow_events};gap={plan.slow_gap_ms}"
        length = plan.slow_events * plan.slow_gap_ms / 1000
        idle = rss_mb(target.pid)
        results, peak = asyncio.run(self._slow(target, mode, length))
        self._check_streams(target, results, plan.slow_events)
        limit = STALL_FACTOR * plan.slow_gap_ms / 1000
        self.figures.add("streams completed", target.name, sum(r.done for r in results))
        self.figures.add("stalls (gap > 2× pace)", target.name, sum(g > limit for r in results for g in r.gaps))
        self.figures.add("longest gap", target.name, max((g for r in results for g in r.gaps), default=0) * 1000)
        self.figures.add("RSS idle", target.name, idle)
        self.figures.add("RSS peak", target.name, peak)

    async def _slow(self, target: Target, mode: str, length: float) -> tuple[list[streams.StreamResult], float]:
        peak = rss_mb(target.pid)
        run = streams.concurrent(
            target.port, target.path, SMALL_BODY, mode, self.plan.slow_streams, ramp=self.plan.ramp, timeout=length + 30
        )
        async with asyncio.TaskGroup() as group:
            task = group.create_task(run)
            while not task.done():
                peak = max(peak, rss_mb(target.pid))
                await asyncio.wait({task}, timeout=0.05)
        return task.result(), peak

    # 6. the hot path without I/O, with one provider and with 200
    def hot_path(self, target: Target) -> None:
        self.figures.add(HOT, target.name, hotpath.decision_us(target.providers, target.env, SMALL_BODY))

    # 5. large bodies
    def large_bodies(self, target: Target) -> None:
        request = self.wrk(target, self.large, PLAIN, 1)
        self.figures.add("1 MB request p50", target.name, request.p50_ms)
        self.figures.add("1 MB request p99", target.name, request.p99_ms)
        response = self.wrk(target, self.small, BIG_RESPONSE, 1)
        self.figures.add("64 KB response p50", target.name, response.p50_ms)
        self.figures.add("64 KB response p99", target.name, response.p99_ms)
        if response.requests and response.bytes < response.requests * 65536:
            self.problem(target, f"64 KB answers came back short: {response.bytes} bytes")

    def _check_streams(self, target: Target, results: list[streams.StreamResult], events: int) -> None:
        bad = [r for r in results if r.status != 200 or not r.done or r.events != events or r.error]
        if bad or not results:
            sample = bad[0] if bad else None
            self.problem(target, f"{len(bad)} of {len(results)} streams incomplete, e.g. {sample}")


def _percentile(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def rows(plan: Plan) -> list[Row]:
    """The table's rows; each target is judged on the same paired medians the comparison columns show."""

    def med(metric: str, target: str, f: Figures) -> float:
        return median(f.values(metric, target))

    def added(metric: str, f: Figures) -> float:
        return median(paired(f.values(metric, "gateway"), f.values(metric, "direct"), lambda a, b: a - b))

    def share(metric: str, f: Figures, of: str) -> float:
        return median(paired(f.values(metric, "gateway"), f.values(metric, of), lambda a, b: a / b if b else 0))

    def all_done(f: Figures) -> bool:
        values = f.values("streams completed", "gateway")
        return bool(values) and min(values) == plan.slow_streams

    def no_stall(f: Figures) -> bool:
        values = f.values("stalls (gap > 2× pace)", "gateway")
        return bool(values) and max(values) == 0

    def flat(f: Figures) -> bool:
        # The extra work a 200-provider table causes, against the CPU time a whole request costs.
        extra = median(paired(f.values(HOT, "gateway-200"), f.values(HOT, "gateway"), lambda a, b: a - b))
        return extra <= 0.01 * med("CPU per request, c=64", "gateway", f)

    return [
        Row("1. plain, c=1", "c1 p50", "ms", "added ≤ 0.3 ms", lambda f: added("c1 p50", f) <= 0.3),
        Row("1. plain, c=1", "c1 p99", "ms", "added ≤ 1 ms", lambda f: added("c1 p99", f) <= 1.0),
        Row(
            "2. plain, c=64",
            "c64 rate",
            "/s",
            "≥ 40 % of nginx",
            lambda f: share("c64 rate", f, "nginx") >= 0.4,
        ),
        Row("2. plain, c=64", "CPU per request, c=64", "µs"),
        Row("2. plain, sweep", "best rate, p99 < 20 ms", "/s"),
        Row("2. plain, sweep", "…at concurrency", "n"),
        Row("3. stream, 50 ms first token", "TTFB p50", "ms"),
        Row("3. stream, 50 ms first token", "TTFB p99", "ms", "added ≤ 1 ms", lambda f: added("TTFB p99", f) <= 1.0),
        Row("3. stream, chunk every 5 ms", "chunk gap p99", "ms"),
        Row("3. stream, 50 unpaced chunks, c=32", "50-chunk streams", "/s"),
        Row("3. stream, 50 unpaced chunks, c=32", "CPU per 50-chunk stream", "µs"),
        Row("4. 1,000 slow streams", "streams completed", "n", "all", all_done),
        Row("4. 1,000 slow streams", "stalls (gap > 2× pace)", "n", "none", no_stall),
        Row("4. 1,000 slow streams", "longest gap", "ms"),
        Row("4. 1,000 slow streams", "RSS idle", "MB"),
        Row("4. 1,000 slow streams", "RSS peak", "MB", "≤ 150 MB", lambda f: med("RSS peak", "gateway", f) <= 150),
        Row("5. large bodies, c=1", "1 MB request p50", "ms"),
        Row("5. large bodies, c=1", "1 MB request p99", "ms"),
        Row("5. large bodies, c=1", "64 KB response p50", "ms"),
        Row("5. large bodies, c=1", "64 KB response p99", "ms"),
        Row("6. table of 200 providers vs 1", HOT, "µs", "200 adds < 1 % of a request's CPU", flat),
    ]


def table_size_note(f: Figures) -> str:
    """Scenario 1 and 2 against a gateway with a 200-provider table: the hot path must not notice."""
    one, many = f.values("c1 p50", "gateway"), f.values("c1 p50", "gateway-200")
    rate_one, rate_many = f.values("c64 rate", "gateway"), f.values("c64 rate", "gateway-200")
    if not (one and many and rate_one and rate_many):
        return ""
    p50 = median([b - a for a, b in zip(one, many, strict=False)])
    rate = median([100 * b / a for a, b in zip(rate_one, rate_many, strict=False)])
    return f"Table of 200 providers vs 1 (same run): c=1 p50 {p50:+.3f} ms, c=64 throughput {rate:.0f} % of one."


def cpus() -> tuple[int | None, int | None]:
    """The core for the thing under test and the core for everything else (none pinned on a single core)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def run(plan: Plan, out: Path | None, keep_awake: bool) -> int:
    served_cpu, load_cpu = cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 20000)), hard))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        mock = start_mock(procs, load_cpu)
        nginx = start_nginx(procs, served_cpu, mock.port)
        gateway = start_gateway(procs, served_cpu, "gateway", BENCH_DIR / "providers.yaml", mock.port)
        many = tables.write(workdir / "providers-200.yaml", 200)
        gateway200 = start_gateway(procs, served_cpu, "gateway-200", many, mock.port)
        floor = start_floor(procs, served_cpu, mock.port)
        alone = start_alone(procs, served_cpu)
        bench = Bench(plan, workdir, load_cpu)
        main, every = [mock, nginx, gateway], [mock, nginx, alone, floor, gateway, gateway200]
        if plan.warm_up:
            for target in every:
                bench.wrk(target, bench.small, PLAIN, 8)
        # Concurrency-1 scenarios run with both cores kept awake (see `awake`); load scenarios without.
        scenarios = [
            (bench.latency, every, keep_awake),
            (bench.throughput, every, False),
            (bench.sweep, main, False),
            (bench.first_token, main, keep_awake),
            (bench.stream_rate, [*main, floor], False),
            (bench.slow_streams, main, False),
            (bench.large_bodies, main, keep_awake),
            (bench.hot_path, [gateway, gateway200], False),
        ]
        for rep in range(plan.reps):
            for scenario, targets, spin in scenarios:
                with awake(procs, (served_cpu, load_cpu) if spin else ()):
                    for target in targets:
                        print(f"[{time.monotonic() - started:5.0f}s] rep {rep + 1}: {scenario.__name__} {target.name}")
                        if plan.patience:
                            noise.wait_quiet(procs.pids, QUIET, plan.patience)
                        meter = noise.Meter(procs.pids)
                        scenario(target)
                        bench.outside.append(meter.stop())
    figures = bench.figures
    text = render(plan, figures, keep_awake, bench.outside)
    print(text)
    if out is not None:
        write(out, text)
    return 1 if figures.problems else 0


def render(plan: Plan, figures: Figures, keep_awake: bool, outside: list[float]) -> str:
    kind = "smoke run (correctness only, figures not judged)" if plan is SMOKE else f"{plan.reps} repetitions"
    parts = [
        f"Benchmark, {kind}: {machine()}.",
        "",
        table(figures, rows(plan), judge=plan is not SMOKE),
        "",
        "Medians (min–max). Comparisons pair figures of the same repetition. One gateway process or nginx's one "
        "worker on core 0; mock upstream (Node), wrk and the stream client on core 1."
        + (
            " Concurrency-1 scenarios (1, 3 first token, 5) keep both cores awake with an idle-priority spinner, "
            "so that they measure software rather than a halted vCPU's wake-up (`--no-awake` to turn off)."
            if keep_awake
            else " Run with `--no-awake`: idle cores halt between requests."
        ),
    ]
    if outside:
        waited = f"; each waited up to {plan.patience:g} s for under {QUIET:g} core" if plan.patience else ""
        parts += [
            "",
            f"Other processes on the machine used {median(outside):.2f} cores (median; max {max(outside):.2f}) "
            f"during the {len(outside)} measurements{waited}. CPU time per request is the figure least affected.",
        ]
    note = table_size_note(figures)
    if note:
        parts += ["", note]
    if figures.problems:
        parts += ["", "**Problems:**", *(f"- {p}" for p in figures.problems)]
    return "\n".join(parts) + "\n"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one short run of each scenario, correctness only")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--no-awake", action="store_true", help="let idle cores halt in concurrency-1 scenarios")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(run(SMOKE if args.smoke else FULL, args.out, keep_awake=not args.no_awake))


if __name__ == "__main__":
    main()
