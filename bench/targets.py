"""The processes a benchmark run starts (mock, nginx, gateways) and their clean-up, even on Ctrl-C or failure.

Every process is started in its own session and stopped by its own process group id; nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout:g}s")


def pinned(cpu: int | None, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else list(command)


class Processes:
    """Owns what it starts; `close()` (also on `with` exit) stops each process group, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO
        )
        log.close()
        self._started.append(process)
        return process

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._started]

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
        self._started.remove(process)

    def close(self) -> None:
        for process in reversed(self._started):
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in reversed(self._started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self._started.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the group id is the pid: each process leads its own session


@dataclass(frozen=True, slots=True)
class Target:
    """One thing the load is sent to: its name, port, path and (for RSS) the process serving it."""

    name: str
    port: int
    path: str = "/v1/chat/completions"
    pid: int | None = None
    # A gateway's table and environment, for the in-process measurement of its hot path.
    providers: Path = Path()
    env: Mapping[str, str] = field(default_factory=dict)


def start_mock(procs: Processes, cpu: int | None) -> Target:
    port = free_port()
    process = procs.start("mock", pinned(cpu, ["node", str(BENCH_DIR / "mock_upstream.js"), str(port)]))
    wait_port(port, process)
    return Target("direct", port, pid=process.pid)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    client_max_body_size 16m;
    client_body_buffer_size 2m;
    keepalive_requests 1000000;
    upstream mock {{ server 127.0.0.1:{upstream}; keepalive 1024; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def start_nginx(procs: Processes, cpu: int | None, upstream: int) -> Target:
    port = free_port()
    conf = procs.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=procs.workdir, upstream=upstream, port=port))
    process = procs.start("nginx", pinned(cpu, ["nginx", "-p", str(procs.workdir), "-c", str(conf)]))
    wait_port(port, process)
    # The master only supervises; the single worker is the one that serves.
    return Target("nginx", port, pid=_only_child(process.pid))


def _only_child(pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.05)
    return pid


def start_gateway(procs: Processes, cpu: int | None, name: str, providers: Path, upstream: int) -> Target:
    port = free_port()
    env = {
        **os.environ,
        "BENCH_API_URL": f"http://{HOST}:{upstream}/v1",
        "BENCH_TABLE_KEY": "bench-table-key",
        "ENVIRONMENT": "production",
        # The same idle pool to the upstream as nginx's `keepalive 1024`: the spec's default of 20 per host would
        # close and reopen connections at concurrency 64, and nginx would be measured with a warm pool against it.
        "CLIENT_MAX_IDLE_CONNS": "1024",
        "CLIENT_MAX_IDLE_CONNS_PER_HOST": "1024",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(port), "--providers", str(providers)]
    process = procs.start(name, pinned(cpu, command), env=env)
    wait_port(port, process)
    return Target(name, port, pid=process.pid, providers=providers, env=env)


@contextlib.contextmanager
def awake(procs: Processes, cpus: Sequence[int | None]) -> Iterator[None]:
    """Keep these cores from halting with an idle-priority spinner each, for the duration of the block.

    On a virtual machine a halted vCPU takes milliseconds to wake, so a core idling between the requests of a
    concurrency-1 run would measure the hypervisor, not the software. SCHED_IDLE yields to any other task at once.
    """
    spinners = [
        procs.start(f"awake-{cpu}", ["chrt", "-i", "0", "taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"])
        for cpu in cpus
        if cpu is not None
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            procs.stop(spinner)


def start_floor(procs: Processes, cpu: int | None, upstream: int) -> Target:
    """A bare aiohttp relay: what the framework costs before any gateway logic."""
    port = free_port()
    command = [sys.executable, "-m", "bench.floor_proxy", str(port), f"http://{HOST}:{upstream}/v1/chat/completions"]
    process = procs.start("aiohttp-floor", pinned(cpu, command))
    wait_port(port, process)
    return Target("aiohttp", port, pid=process.pid)


def start_alone(procs: Processes, cpu: int | None) -> Target:
    """An aiohttp server answering by itself: the ceiling of any aiohttp-based gateway (plain scenarios only)."""
    port = free_port()
    process = procs.start("aiohttp-alone", pinned(cpu, [sys.executable, "-m", "bench.aiohttp_alone", str(port)]))
    wait_port(port, process)
    return Target("aiohttp-alone", port, pid=process.pid)


def rss_mb(pid: int | None) -> float:
    """Resident memory of `pid` in MB (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
