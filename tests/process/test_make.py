"""The first commands a newcomer types: `make help`, `make run` (banner once the gateway answers, a taken port in
one line, `kill` of make stops everything), the bench targets without their tools, and the gateway's own
`--version`, `--help` and bind errors. Every process here is started by the test and waited for with a bound."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from tests.fakes.gateways import ROOT, gateway_args
from tests.fakes.net import free_port

LIMIT = 60  # seconds: the bound on every wait here

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str) -> list[str]:
    """`make` from the repository, with this interpreter's venv and without reinstalling it (`-o install`)."""
    return ["make", "--no-print-directory", "-o", "install", f"BIN={Path(sys.executable).parent}", *args]


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port something listens on, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {LIMIT}s")


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


# --- make help -----------------------------------------------------------------------------------------------


@needs_make
def test_make_help_lists_every_target_once_with_one_line() -> None:
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text("utf-8"), re.M)
    assert phony is not None
    done = subprocess.run(make("help"), cwd=ROOT, capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 0, done.stderr
    rows = [re.match(r"^  make (\S+) +(\S.*)$", line) for line in done.stdout.splitlines()]
    assert all(rows), done.stdout
    targets = [row.group(1) for row in rows if row]
    assert sorted(targets) == sorted(phony.group(1).split())


# --- make run ------------------------------------------------------------------------------------------------


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, int]]]:
    """`make run` on free ports, its output in a file; whatever is left of its process group is stopped after."""
    ports = {"PORT": free_port(), "DEMO_PORT": free_port(), "METRICS_PORT": free_port()}
    output = tmp_path / "make-run.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            make(
                "run",
                "HOST=127.0.0.1",
                f"USAGE_DB={tmp_path / 'usage' / 'usage.db'}",
                *(f"{name}={port}" for name, port in ports.items()),
            ),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the clean-up below reaches only what this test started
        )
    try:
        yield process, output, ports
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=LIMIT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@needs_make
def test_make_run_prints_its_banner_once_the_gateway_answers_and_stops_when_make_is_killed(make_run) -> None:
    process, output, ports = make_run
    gateway = f"http://127.0.0.1:{ports['PORT']}"
    wait_until(lambda: f"Gateway on {gateway}" in output.read_text(), "no banner")
    # The banner came after /health answered: the gateway, its metrics and the demo behind it all answer now.
    assert get(f"{gateway}/health") == (200, '{"message":"OK"}')
    status, models = get(f"{gateway}/v1/models")
    assert status == 200 and "demo/demo-story" in models
    banner = output.read_text()
    assert f"curl -s http://127.0.0.1:{ports['METRICS_PORT']}/metrics" in banner
    status, metrics = get(f"http://127.0.0.1:{ports['METRICS_PORT']}/metrics")
    assert status == 200 and "gen_ai_server_request_duration_seconds" in metrics
    assert "Traceback" not in banner
    # The usage store is on, in a SQLite file: a chat shows in the usage API at once, and the page is served.
    assert f"curl -s '{gateway}/v1/usage?group_by=model'" in banner
    chat = b'{"model": "demo/demo-echo", "messages": [{"role": "user", "content": "hello"}]}'
    asked = urllib.request.Request(
        f"{gateway}/v1/chat/completions", data=chat, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(asked, timeout=10) as answer:
            assert answer.status == 200
    except urllib.error.HTTPError as refused:  # say why, should it ever be refused
        raise AssertionError(f"chat answered {refused.code}: {refused.read()[:500]!r}") from None
    wait_until(lambda: '"requests":1,' in get(f"{gateway}/v1/usage")[1], "no usage row")
    assert '"key":"demo-echo"' in get(f"{gateway}/v1/usage?group_by=model")[1]
    status, page = get(f"{gateway}/usage")
    assert status == 200 and "<title>Usage" in page

    process.send_signal(signal.SIGTERM)  # `kill` of make's process
    assert process.wait(timeout=LIMIT) != 0
    wait_until(lambda: not accepts(ports["PORT"]), "the gateway still listens")
    wait_until(lambda: not accepts(ports["DEMO_PORT"]), "the demo upstream still listens")
    assert "stopped" in output.read_text()  # the gateway drained: the signal reached it


@needs_make
@pytest.mark.parametrize("variable", ["PORT", "DEMO_PORT", "METRICS_PORT"])
def test_make_run_with_a_taken_port_says_so_in_one_line(variable: str) -> None:
    ports = {"PORT": free_port(), "DEMO_PORT": free_port(), "METRICS_PORT": free_port()}
    with taken_port() as taken:
        ports[variable] = taken
        done = subprocess.run(
            make("run", "HOST=127.0.0.1", *(f"{name}={port}" for name, port in ports.items())),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LIMIT,
        )
    assert done.returncode == 2
    assert done.stdout == ""
    first, *rest = done.stderr.splitlines()
    assert first == (
        f"make run: cannot listen on 127.0.0.1:{taken} (Address already in use); "
        f"pick another port: make run {variable}=N"
    )
    # make's own error line only ("make[N]:" when make runs nested, as under `make test`)
    assert [line for line in rest if not re.match(r"make(\[\d+\])?: \*\*\*", line)] == []
    assert not any(accepts(port) for name, port in ports.items() if name != variable)  # nothing was started


# --- the bench targets without their tools -------------------------------------------------------------------


@needs_make
@pytest.mark.parametrize("target", ["bench-smoke", "bench-instructions"])
def test_bench_targets_skip_in_one_line_without_their_tools_and_root(tmp_path: Path, target: str) -> None:
    """A PATH without wrk/nginx/node/valgrind, and an `id` that says uid 1000 (not root), so nothing can install
    them: one line, success, and no benchmark started."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sed").symlink_to(shutil.which("sed") or "/usr/bin/sed")  # the Makefile reads its version with sed
    (tools / "id").write_text("#!/bin/sh\necho 1000\n")
    (tools / "id").chmod(0o755)
    command = [shutil.which("make") or "make", *make(target)[1:]]
    done = subprocess.run(command, cwd=ROOT, env={"PATH": str(tools)}, capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{target}: skipped: missing wrk nginx node valgrind (not root, so not installed; see make bench-deps)"
    ]
    assert done.stderr == ""


@needs_make
def test_bench_deps_as_root_fails_loudly_when_apt_get_fails(tmp_path: Path) -> None:
    """CI runs as root: there a missing tool is installed, and an apt-get that fails stops the target."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sed").symlink_to(shutil.which("sed") or "/usr/bin/sed")
    for name, script in (("id", "echo 0"), ("apt-get", "echo 'E: Unable to locate package wrk' >&2; exit 100")):
        (tools / name).write_text(f"#!/bin/sh\n{script}\n")
        (tools / name).chmod(0o755)
    command = [shutil.which("make") or "make", *make("bench-smoke")[1:]]
    done = subprocess.run(command, cwd=ROOT, env={"PATH": str(tools)}, capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode != 0
    assert done.stdout.splitlines() == ["bench-smoke: installing wrk nginx node valgrind"]
    assert "E: Unable to locate package wrk" in done.stderr
    assert "bench-smoke: apt-get could not install wrk nginx node valgrind" in done.stderr


# --- the gateway's command line ------------------------------------------------------------------------------


def gateway(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "ENVIRONMENT": "production", **env},
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )


def test_version_and_help() -> None:
    version = gateway(["gateway", "--version"])
    assert (version.returncode, version.stdout) == (0, f"gateway {__version__}\n")
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert f'\nversion = "{__version__}"\n' in pyproject
    usage = gateway(["gateway", "--help"])
    assert usage.returncode == 0
    assert "gateway keys new NAME" in usage.stdout and "gateway keys check FILE" in usage.stdout


def test_a_taken_port_stops_the_gateway_in_one_line_with_exit_2() -> None:
    with taken_port() as taken:
        done = gateway(gateway_args(taken))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"gateway: cannot listen on 127.0.0.1:{taken} (Address already in use); "
        "pick another port: --port N or SERVER_PORT=N (make run PORT=N)"
    ]


def test_a_taken_metrics_port_stops_the_gateway_in_one_line_with_exit_2() -> None:
    port = free_port()
    with taken_port() as taken:
        done = gateway(gateway_args(port), TELEMETRY_ENABLE="true", TELEMETRY_METRICS_PORT=str(taken))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"gateway: cannot listen for /metrics on 127.0.0.1:{taken} (Address already in use); "
        "pick another port: TELEMETRY_METRICS_PORT=N (make run METRICS_PORT=N)"
    ]
    assert not accepts(port)


def test_a_taken_port_stops_the_demo_upstream_in_one_line_with_exit_2() -> None:
    with taken_port() as taken:
        done = gateway(["gateway.demo", "--port", str(taken)])
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"gateway.demo: cannot listen on 127.0.0.1:{taken} (Address already in use); "
        "pick another port: make run DEMO_PORT=N"
    ]
