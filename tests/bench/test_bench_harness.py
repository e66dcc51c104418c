"""The benchmark harness itself: the mock's answers, the stream client's timing, the table and the clean-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from bench import report, streams, tables
from bench.targets import Processes, start_mock

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is absent: run `make bench-deps`")

BODY = b'{"model":"bench-small","messages":[{"role":"user","content":"hi"}]}'


async def test_mock_answers_plain_big_and_streams(tmp_path: Path) -> None:
    with Processes(tmp_path) as procs:
        mock = start_mock(procs, None)
        url = f"http://127.0.0.1:{mock.port}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=BODY) as plain:
                assert plain.status == 200
                assert (await plain.json())["choices"][0]["message"]["content"] == "Hello from the bench."
            async with session.post(url, data=BODY, headers={"X-Bench": "mode=big;size=65536"}) as big:
                raw = await big.read()
                assert big.headers["Content-Length"] == "65536"
                assert len(raw) == 65536
                assert raw.startswith(b'{"object":"bench.big"') and raw.endswith(b'"}')
        results = await streams.sequential(
            mock.port, "/v1/chat/completions", BODY, "mode=sse;first=20;n=4;gap=5", 2, 10
        )
        assert [(r.status, r.events, r.done, r.error, len(r.gaps)) for r in results] == [(200, 4, True, "", 3)] * 2
        assert all(r.ttfb >= 0.015 for r in results)  # the first event waits for `first`, not a timing bound
        many = await streams.concurrent(mock.port, "/x", BODY, "mode=sse;first=0;n=50;gap=0", 20, ramp=0.1, timeout=10)
        assert {(r.status, r.events, r.done, r.error) for r in many} == {(200, 50, True, "")}
        pid = mock.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)


def test_table_compares_each_repetition_to_direct_and_nginx() -> None:
    figures = report.Figures()
    for direct, nginx, gateway in ((0.1, 0.2, 0.3), (0.1, 0.2, 0.5), (0.1, 0.2, 0.4)):
        figures.add("c1 p50", "direct", direct)
        figures.add("c1 p50", "nginx", nginx)
        figures.add("c1 p50", "gateway", gateway)
    for rate in (1000.0, 1000.0, 1000.0):
        figures.add("c64 rate", "nginx", rate)
        figures.add("c64 rate", "gateway", rate / 2)
    rows = [
        report.Row("1", "c1 p50", "ms", "added ≤ 0.3 ms", lambda f: True),
        report.Row("2", "c64 rate", "/s", "≥ 40 % of nginx", lambda f: False),
    ]
    lines = report.table(figures, rows).splitlines()
    assert lines[2] == (
        "| 1 | c1 p50 (ms) | 0.100 (0.100–0.100) | 0.200 (0.200–0.200) | – | – | 0.400 (0.300–0.500) | – "
        "| +0.100 ms | +0.300 ms | +0.200 ms | – | added ≤ 0.3 ms ✅ |"
    )
    assert lines[3] == (
        "| 2 | c64 rate (/s) | – | 1,000 (1,000–1,000) | – | – | 500 (500–500) | – "
        "| – | – | 50 % | – | ≥ 40 % of nginx ❌ |"
    )


def test_generated_table_has_the_bench_provider_last(tmp_path: Path) -> None:
    from gateway.config.providers import load_table

    path = tables.write(tmp_path / "p.yaml", 200)
    env = {**os.environ, "BENCH_TABLE_KEY": "k", "BENCH_API_URL": "http://127.0.0.1:1/v1"}
    table = load_table(path, env)
    assert len(table.providers) == 200
    assert all(p.served for p in table.providers.values())
    assert list(table.providers)[-1] == "bench"
    assert table.by_prefix("bench-small") is table.providers["bench"]
    assert str(table.providers["bench"].endpoints["chat"].url) == "http://127.0.0.1:1/v1/chat/completions"
