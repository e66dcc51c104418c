"""Plain-request load from wrk (one thread, N connections, bounded duration), read back as numbers."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .noise import cpu_ns
from .targets import BENCH_DIR, HOST, Target, pinned


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors plus non-2xx/3xx answers
    p50_ms: float
    p99_ms: float
    max_ms: float
    bytes: int
    cpu_us: float  # CPU time of the target's process per request

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(
    target: Target, body: Path, mode: str, connections: int, seconds: float, cpu: int | None, timeout_s: int = 5
) -> WrkResult:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(BENCH_DIR / "wrk.lua"),
        f"http://{HOST}:{target.port}{target.path}",
    ]
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_MODE": mode}
    cpu_before = cpu_ns(target.pid)
    done = subprocess.run(pinned(cpu, command), env=env, capture_output=True, text=True, timeout=seconds + 30)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk against {target.name} failed ({done.returncode}): {done.stdout} {done.stderr}")
    cpu = cpu_ns(target.pid) - cpu_before
    data = json.loads(line[len("BENCH ") :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
        bytes=data["bytes"],
        cpu_us=cpu / 1000 / max(1, data["requests"]),
    )
