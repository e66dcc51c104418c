"""Figures -> one Markdown table: medians over the repetitions with their min-max, compared to direct and nginx."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .targets import REPO

Values = dict[str, list[float]]  # target name -> one figure per repetition


@dataclass(slots=True)
class Figures:
    """metric -> target -> values; metrics keep the order in which they were first recorded."""

    data: dict[str, Values] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, metric: str, target: str, value: float) -> None:
        self.data.setdefault(metric, {}).setdefault(target, []).append(value)

    def values(self, metric: str, target: str) -> list[float]:
        return self.data.get(metric, {}).get(target, [])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "–"
    if unit == "ms":
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if unit in ("MB", "µs"):
        return f"{value:.1f}"
    return f"{value:,.0f}"


def cell(values: Sequence[float], unit: str) -> str:
    if not values:
        return "–"
    text = _fmt(median(values), unit)
    if len(values) > 1:
        text += f" ({_fmt(min(values), unit)}–{_fmt(max(values), unit)})"
    return text


def paired(a: Sequence[float], b: Sequence[float], op: Callable[[float, float], float]) -> list[float]:
    """One comparison per repetition, so each pairs figures taken moments apart."""
    return [op(x, y) for x, y in zip(a, b, strict=False)]


def diff(a: Sequence[float], b: Sequence[float]) -> str:
    values = paired(a, b, lambda x, y: x - y)
    return "–" if not values else f"{median(values):+.3f} ms"


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    values = paired(a, b, lambda x, y: 100 * x / y if y else float("nan"))
    return "–" if not values else f"{median(values):.0f} %"


def times(a: Sequence[float], b: Sequence[float]) -> str:
    values = paired(a, b, lambda x, y: x / y if y else float("nan"))
    return "–" if not values else f"{median(values):.1f}×"


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    metric: str
    # "ms" (compared by difference), "/s" (by percentage), "µs" of CPU (by factor), "MB", "n" (not compared)
    unit: str
    target: str = ""
    check: Callable[[Figures], bool] | None = None


COLUMNS = ("direct", "nginx", "aiohttp-alone", "aiohttp", "gateway", "gateway-200")


def table(figures: Figures, rows: Sequence[Row], judge: bool = True) -> str:
    head = (
        "| Scenario | Metric | direct | nginx | aiohttp alone | aiohttp relay | gateway | gateway, 200 providers "
        "| nginx vs direct | gateway vs direct | gateway vs nginx | gateway vs aiohttp alone | Target |"
    )
    lines = [head, "|" + "---|" * 13]
    for row in rows:
        got = {name: figures.values(row.metric, name) for name in COLUMNS}
        if row.unit == "ms":
            versus = [diff(got["nginx"], got["direct"]), diff(got["gateway"], got["direct"])]
            versus += [diff(got["gateway"], got["nginx"]), diff(got["gateway"], got["aiohttp-alone"])]
        elif row.unit == "µs":
            versus = [times(got["nginx"], got["direct"]), times(got["gateway"], got["direct"])]
            versus += [times(got["gateway"], got["nginx"]), times(got["gateway"], got["aiohttp-alone"])]
        elif row.unit == "/s":
            versus = [ratio(got["nginx"], got["direct"]), ratio(got["gateway"], got["direct"])]
            versus += [ratio(got["gateway"], got["nginx"]), ratio(got["gateway"], got["aiohttp-alone"])]
        else:
            versus = ["", "", "", ""]
        verdict = ""
        if judge and row.check is not None:
            verdict = " ✅" if row.check(figures) else " ❌"
        cells = [cell(got[name], row.unit) for name in COLUMNS]
        label = f"{row.metric} ({row.unit})" if row.unit != "n" else row.metric
        lines.append(f"| {row.scenario} | {label} | " + " | ".join(cells + versus) + f" | {row.target}{verdict} |")
    return "\n".join(lines)


def _command(*args: str) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip()


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in _command("lscpu").splitlines() if line.startswith("Model name")),
        "?",
    )
    cores = os.cpu_count()
    commit = _command("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    dirty = "+dirty" if _command("git", "-C", str(REPO), "status", "--porcelain", "--", "gateway") else ""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {model}, {cores} cores; "
        f"Linux {platform.release()}; Python {platform.python_version()}; gateway {commit}{dirty}; "
        f"{_command('nginx', '-v').replace('nginx version: ', '')}; node {_command('node', '--version')}; "
        f"{_command('wrk', '--version').splitlines()[0].split(' [')[0] if _command('wrk', '--version') else 'wrk ?'}"
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
