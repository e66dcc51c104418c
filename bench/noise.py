"""CPU time: what a process under test spends per request, and what processes outside the run take meanwhile.

On a shared machine other work steals cores from the run; wall-clock figures then drift while CPU time per
request barely moves. The runner waits for a quiet machine before each measurement and reports what it saw.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int | None) -> int:
    """Nanoseconds `pid` has run on a CPU (its threads included), from /proc/PID/schedstat; 0 when unknown."""
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def _own_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of this process, its reaped children (wrk) and the live processes it started."""
    total = 0.0
    for pid in (os.getpid(), *pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
    return total


def _session_pids(leaders: Iterable[int]) -> list[int]:
    """Every live process in the sessions these leaders started (nginx's worker, a spinner's shell)."""
    sessions = set(leaders)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) in sessions:
                found.append(int(entry.name))
    return found


class Meter:
    """Cores' worth of CPU used outside this run between `__init__` and `stop()`."""

    def __init__(self, leaders: Iterable[int]) -> None:
        self._pids = _session_pids(leaders)
        self._started = time.monotonic()
        self._busy, self._own = _busy_seconds(), _own_seconds(self._pids)

    def stop(self) -> float:
        elapsed = max(1e-3, time.monotonic() - self._started)
        busy, own = _busy_seconds() - self._busy, _own_seconds(self._pids) - self._own
        return max(0.0, busy - own) / elapsed


def foreign_cores(leaders: Iterable[int], seconds: float) -> float:
    """Cores' worth of CPU used by processes outside this run over the next `seconds`."""
    meter = Meter(leaders)
    time.sleep(seconds)
    return meter.stop()


def wait_quiet(leaders: Iterable[int], limit: float, patience: float) -> float:
    """Wait (up to `patience` seconds) until outside processes use under `limit` cores; return the last reading."""
    leaders = list(leaders)
    deadline = time.monotonic() + patience
    while True:
        used = foreign_cores(leaders, 0.5)
        if used < limit or time.monotonic() >= deadline:
            return used
