"""Instructions per request of the gateway's hot paths: one gateway under valgrind's callgrind per scenario,
counting switched on only while a fixed number of keep-alive requests go through it (deterministic, blind to
system calls and to how busy the machine is).

    python -m bench.instructions --source DIR [--scenario NAME] [--requests 2000] [--warmup 300]
    python -m bench.instructions --check bench/baseline.json [--update]

The gateway runs from DIR (a source tree, e.g. a `git worktree` of another commit; default: this one) as deployed
(production, metrics on), pinned to core 0; a fake upstream runs in its own process and this process is the
client, both on core 1 when there is one. Prints `instructions per request: N`. `--check` measures every scenario
of the baseline file and fails when one grows by more than its tolerance; `--update` writes the figures instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
GATEWAY_CPU = 0
LOAD_CPU = 1  # the upstream and the client, when the machine has a second core

# The benchmark's plain request (bench/run.py) with wrk's headers (bench/wrk.lua).
REQUEST_BODY = b'{"model":"bench-small","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
STREAM_BODY = (
    b'{"model":"bench-small","stream":true,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
)
# A streamed answer of STREAM_EVENTS chat chunks and [DONE]: the first event with the head, the rest a moment
# later, so the relay streams (prepare, then copy as bytes arrive) rather than sending a whole answer.
STREAM_EVENTS = 20
STREAM_DELAY = 0.02
# The mock upstream's plain answer (bench/mock_upstream.js), byte for byte; the gateway passes it through.
ANSWER_BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}'
)
# One request of each surface beyond chat, and the answer the fake upstream gives it (relayed as it is).
EMBEDDINGS_BODY = b'{"model":"bench-small","input":"Say hello."}'
EMBEDDINGS_ANSWER = (
    b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"bench-model",'
    b'"usage":{"prompt_tokens":3,"total_tokens":3}}'
)
RESPONSES_BODY = b'{"model":"bench-small","input":"Say hello.","max_output_tokens":16}'
RESPONSES_ANSWER = (
    b'{"id":"resp_bench","object":"response","created_at":1700000000,"status":"completed","model":"bench-model",'
    b'"output":[{"type":"message","id":"msg_bench","status":"completed","role":"assistant","content":[{"type":'
    b'"output_text","text":"Hello from the bench.","annotations":[]}]}],'
    b'"usage":{"input_tokens":9,"output_tokens":5,"total_tokens":14}}'
)
MESSAGES_BODY = b'{"model":"bench-small","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}'
MESSAGES_ANSWER = (
    b'{"id":"msg_bench","type":"message","role":"assistant","model":"bench-model","content":[{"type":"text",'
    b'"text":"Hello from the bench."}],"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":9,"output_tokens":5}}'
)
# A chat to a model group of two deployments, chosen by price and latency: the routing decision and its record.
GROUP_BODY = b'{"model":"bench-group","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
# Seed 001's chat: the same upstream answer as plain, translated into the API's envelope.
INFERENCE_BODY = b'{"model":"bench-small","messages":[{"role":"user","content":"Say hello."}],"maxTokens":16}'
INFERENCE_ANSWER = (
    b'{"success":true,"data":{"content":"Hello from the bench.","model":"bench-model","provider":"bench",'
    b'"finishReason":"stop","toolCalls":[],"usage":{"inputTokens":9,"outputTokens":5}}}'
)
# A transcription: a multipart upload of a small file, streamed through to the provider.
BOUNDARY = "bench-boundary"
UPLOAD_BODY = (
    (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nbench-small\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="hello.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode()
    + bytes(range(256)) * 16
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)
TRANSCRIPTION_ANSWER = b'{"text":"Hello from the bench."}'
MODELS_BODY = (
    b'{"object":"list","data":[{"id":"bench-model","object":"model","created":1700000000,"owned_by":"bench"}]}'
)

PROVIDERS_YAML = """\
providers:
  bench:
    id: bench
    url: http://{host}:{port}/v1
    auth_type: none
    supports_vision: false
    model_prefixes: [bench-]
    endpoints:
      models:
        name: list_models
        method: GET
        endpoint: /models
      chat:
        name: chat_completions
        method: POST
        endpoint: /chat/completions
      embeddings: {{name: embeddings, method: POST, endpoint: /embeddings}}
      responses: {{name: responses, method: POST, endpoint: /responses}}
      messages: {{name: messages, method: POST, endpoint: /messages}}
      audio_transcriptions: {{name: audio_transcriptions, method: POST, endpoint: /audio/transcriptions}}
models:
  bench-group:
    strategy: price+latency
    deployments:
      - {{provider: bench, model: bench-model, input_price: 0.5, output_price: 1.5}}
      - {{provider: bench, model: bench-other, input_price: 0.6, output_price: 1.2}}
"""

START_TIMEOUT = 120.0  # valgrind makes the gateway's start-up slow
STOP_TIMEOUT = 60.0
RESPONSE_TIMEOUT = 60.0  # one answer, under valgrind
TOOL_TIMEOUT = 60.0  # callgrind_control
MAX_HEAD = 64 * 1024
MAX_REQUESTS = 1_000_000
MAX_CONNECTIONS = 1024


# --- the fake upstream (its own process, not under valgrind) ---------------------------------------------------


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _event(index: int) -> bytes:
    chunk = (
        b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",'
        b'"choices":[{"index":0,"delta":{"content":"word%d "},"finish_reason":null}]}' % index
    )
    return b"data: " + chunk + b"\n\n"


STREAM_FIRST = _event(0)
STREAM_REST = b"".join(_event(i) for i in range(1, STREAM_EVENTS)) + b"data: [DONE]\n\n"
STREAM_ANSWER = STREAM_FIRST + STREAM_REST


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(
    STREAM_FIRST
)
STREAM_TAIL = _chunk(STREAM_REST) + b"0\r\n\r\n"
CHAT_RESPONSE = _response("200 OK", ANSWER_BODY)
# By the path's last part: what the fake upstream answers each surface's POST.
SURFACE_RESPONSES = {
    "/embeddings": _response("200 OK", EMBEDDINGS_ANSWER),
    "/responses": _response("200 OK", RESPONSES_ANSWER),
    "/messages": _response("200 OK", MESSAGES_ANSWER),
    "/transcriptions": _response("200 OK", TRANSCRIPTION_ANSWER),
}
MODELS_RESPONSE = _response("200 OK", MODELS_BODY)
NOT_FOUND = _response("404 Not Found", b'{"error":"not found"}')
UNSUPPORTED = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; request bodies framed by Content-Length or chunked (an upload the
    gateway streams through)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            length = 0
            chunked = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = value.strip().lower() == "chunked"
                    if not chunked:
                        self.transport.write(UNSUPPORTED)
                        self.transport.close()
                        return
            if chunked:
                framed = _chunked_length(self.buffer, end + 4)
                if framed is None:
                    return
                length = framed
            elif len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path, _ = lines[0].split(" ", 2)
            surface = SURFACE_RESPONSES.get(path[path.rfind("/") :]) if method == "POST" else None
            if method == "POST" and path.endswith("/chat/completions") and b'"stream":true' in body:
                self.transport.write(STREAM_HEAD)
                asyncio.get_running_loop().call_later(STREAM_DELAY, self._finish_stream)
            elif method == "POST" and path.endswith("/chat/completions"):
                self.transport.write(CHAT_RESPONSE)
            elif surface is not None:
                self.transport.write(surface)
            elif method == "GET" and path.endswith("/models"):
                self.transport.write(MODELS_RESPONSE)
            else:
                self.transport.write(NOT_FOUND)
        if len(self.buffer) > MAX_HEAD:
            self.transport.close()

    def _finish_stream(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(STREAM_TAIL)


def _chunked_length(buffer: bytearray, start: int) -> int | None:
    """The length of a whole chunked body from `start` (its last chunk and final CRLF included), or None while it
    has not all arrived. Only the framing is read: the bench checks answers, not what the upstream got."""
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2 + size + 2
        if len(buffer) < at:
            return None
        if size == 0:
            return at - start


async def serve_upstream() -> None:
    """Listen on a free loopback port, print it on stdout, serve until killed."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, HOST, 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


# --- the client (this process) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One kind of request: what the client sends and the exact body it must get back."""

    name: str
    body: bytes
    answer: bytes
    path: str = "/v1/chat/completions"
    content_type: str = "application/json"

    def request(self, port: int) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {self.content_type}\r\n"
            f"Authorization: Bearer bench-client-key\r\nX-Bench: mode={self.name}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


SCENARIOS = {
    "plain": Scenario("plain", REQUEST_BODY, ANSWER_BODY),
    "stream": Scenario("stream", STREAM_BODY, STREAM_ANSWER),
    "embeddings": Scenario("embeddings", EMBEDDINGS_BODY, EMBEDDINGS_ANSWER, "/v1/embeddings"),
    "responses": Scenario("responses", RESPONSES_BODY, RESPONSES_ANSWER, "/v1/responses"),
    "messages": Scenario("messages", MESSAGES_BODY, MESSAGES_ANSWER, "/v1/messages"),
    "group": Scenario("group", GROUP_BODY, ANSWER_BODY),
    "inference": Scenario("inference", INFERENCE_BODY, INFERENCE_ANSWER, "/api/v1/inference/chat"),
    "transcription": Scenario(
        "transcription",
        UPLOAD_BODY,
        TRANSCRIPTION_ANSWER,
        "/v1/audio/transcriptions",
        f"multipart/form-data; boundary={BOUNDARY}",
    ),
}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One answer: its status and body (sized or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
    if length is not None:
        return status, await reader.readexactly(length)
    if not chunked:
        raise RuntimeError(f"answer {status} has neither Content-Length nor chunked framing")
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are expected
            return status, bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class Client:
    """`connections` keep-alive connections to the gateway, opened once and kept for every phase."""

    def __init__(self, port: int, scenario: Scenario) -> None:
        self.port = port
        self.request = scenario.request(port)
        self.answer = scenario.answer
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self, connections: int) -> None:
        for _ in range(connections):
            self.streams.append(await asyncio.open_connection(HOST, self.port))

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self.streams.clear()

    async def send(self, requests: int) -> None:
        """`requests` plain chats, spread evenly over the connections, one at a time on each; every answer checked."""
        share, extra = divmod(requests, len(self.streams))
        async with asyncio.TaskGroup() as group:
            for i, (reader, writer) in enumerate(self.streams):
                group.create_task(self._sequence(reader, writer, share + (i < extra)))

    async def _sequence(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
        for _ in range(count):
            writer.write(self.request)
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                status, body = await read_response(reader)
            if status != 200 or body != self.answer:
                raise RuntimeError(f"unexpected answer {status}: {body[:300]!r}")


async def wait_healthy(port: int, gateway: subprocess.Popen[bytes], any_answer: bool = False) -> None:
    """Until /health answers 200 (`any_answer`: answers at all, for the floor relay, which has no /health)."""
    deadline = time.monotonic() + START_TIMEOUT
    probe = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with {gateway.returncode} during start-up")
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            writer.write(probe)
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                status, _ = await read_response(reader)
            if status == 200 or any_answer:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"/health did not answer 200 within {START_TIMEOUT:g}s")


async def instrumentation(pid: int, state: str) -> None:
    """`callgrind_control -i on|off PID`: switch counting in the running gateway."""
    tool = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", state, str(pid), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(TOOL_TIMEOUT):
        output, _ = await tool.communicate()
    if tool.returncode != 0:
        raise RuntimeError(f"callgrind_control -i {state} {pid} failed ({tool.returncode}): {output.decode()}")


async def drive(port: int, gateway: subprocess.Popen[bytes], args: argparse.Namespace) -> float:
    """Warm up, count `args.requests` requests; return the seconds the counted phase took."""
    await wait_healthy(port, gateway, any_answer=args.target.startswith("floor"))
    client = Client(port, SCENARIOS[args.scenario])
    try:
        await client.open(args.connections)
        await client.send(args.warmup)
        await instrumentation(gateway.pid, "on")
        started = time.monotonic()
        await client.send(args.requests)
        elapsed = time.monotonic() - started
        await instrumentation(gateway.pid, "off")
    finally:
        await client.close()
    return elapsed


# --- processes ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int | None, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else list(command)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Signal the process's group (each process leads its own session), then wait; SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def upstream(cpu: int | None) -> Iterator[int]:
    command = pinned(cpu, [str(PYTHON), "-m", "bench.instructions", "--serve-upstream"])
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints its port once it listens
        if not line.strip().isdigit():
            raise RuntimeError(f"the fake upstream did not start (exit {process.poll()})")
        yield int(line)
    finally:
        stop(process, signal.SIGTERM, 5)
        if process.stdout is not None:
            process.stdout.close()


def gateway_env(source: Path, upstream_port: int, gateway_port: int, usage_store: Path | None = None) -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ}
    if usage_store is not None:
        # --usage: the store on, as `make run` has it (the guard's baseline runs without it, the default).
        env["USAGE_STORE"] = str(usage_store)
    return {
        **env,
        "PYTHONPATH": str(source),
        "PYTHONDONTWRITEBYTECODE": "1",  # as bench/targets.py starts it
        "ENVIRONMENT": "production",
        "TELEMETRY_ENABLE": "true",
        "TELEMETRY_METRICS_PORT": str(free_port()),
        # bench/targets.py: the same idle pool to the upstream as nginx's `keepalive 1024`
        "CLIENT_MAX_IDLE_CONNS": "1024",
        "CLIENT_MAX_IDLE_CONNS_PER_HOST": "1024",
        "BENCH_API_URL": f"http://{HOST}:{upstream_port}/v1",
    }


def total_instructions(out_file: Path) -> int:
    """The `totals:` (or `summary:`) line of a callgrind output file: the first event, Ir."""
    text = out_file.read_text()
    for key in ("totals", "summary"):
        match = re.search(rf"^{key}:\s*(\d+)", text, re.MULTILINE)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"no totals or summary line in {out_file}")


def measure(args: argparse.Namespace, workdir: Path) -> tuple[int, float]:
    """Total instructions of the counted requests, and how long they took."""
    source: Path = args.source.resolve()
    load_cpu = LOAD_CPU if len(os.sched_getaffinity(0)) > 1 else None
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    with upstream(load_cpu) as upstream_port:
        providers = workdir / "providers.yaml"
        providers.write_text(PROVIDERS_YAML.format(host=HOST, port=upstream_port))
        port = free_port()
        out_file = workdir / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]
        if args.target.startswith("floor"):
            # bench/floor_proxy.py: aiohttp's server and ClientSession relaying, nothing else.
            upstream_url = f"http://{HOST}:{upstream_port}/v1/chat/completions"
            program = [str(PYTHON), "-m", "bench.floor_proxy", str(port), upstream_url]
            if args.target == "floor-lowlevel":
                program.append("--lowlevel")
        else:
            program = [str(PYTHON), "-m", "gateway", "--host", HOST, "--port", str(port), "--providers", str(providers)]
        command = valgrind + program
        log = workdir / "gateway.log"
        with log.open("wb") as sink:
            gateway = subprocess.Popen(
                pinned(GATEWAY_CPU, command),
                cwd=source if args.target == "gateway" else REPO,
                env=gateway_env(
                    source if args.target == "gateway" else REPO,
                    upstream_port,
                    port,
                    workdir / "usage.db" if args.usage else None,
                ),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            elapsed = asyncio.run(drive(port, gateway, args))
            stop(gateway, signal.SIGINT, STOP_TIMEOUT)
        except BaseException:
            stop(gateway, signal.SIGKILL, 10)
            sys.stderr.write(log.read_text(errors="replace")[-3000:])
            raise
    if gateway.returncode != 0 and args.target == "gateway":  # a floor relay ends on SIGINT with a traceback
        raise RuntimeError(f"the gateway exited with {gateway.returncode}: {log.read_text(errors='replace')[-3000:]}")
    return total_instructions(out_file), elapsed


def count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}")
        return value

    return parse


def measure_one(args: argparse.Namespace) -> int:
    """Instructions per request of `args.scenario`."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as workdir:
        total, elapsed = measure(args, Path(workdir))
    print(
        f"bench.instructions: {args.scenario}: {total} Ir in {args.requests} requests, counted phase "
        f"{elapsed:.1f}s, {time.monotonic() - started:.1f}s in all",
        file=sys.stderr,
    )
    requests: int = args.requests
    return round(total / requests)


def check(args: argparse.Namespace) -> int:
    """Measure every scenario of the baseline file; 1 when one grew past the tolerance (or, with --update, write
    the new figures)."""
    path: Path = args.check
    baseline = json.loads(path.read_text())
    tolerance = float(baseline["tolerance"])
    failed = []
    figures: dict[str, int] = {}
    default_requests = args.requests
    for name, expected in baseline["instructions_per_request"].items():
        args.scenario = name
        # A scenario may be counted over fewer requests (the surfaces beyond chat: CI's time, at the same precision).
        args.requests = baseline.get("requests", {}).get(name, default_requests)
        figures[name] = measured = measure_one(args)
        change = measured / expected - 1
        verdict = "ok" if change <= tolerance else "REGRESSION"
        print(f"{name}: {measured} instructions per request, baseline {expected} ({change:+.1%}) {verdict}")
        if change > tolerance:
            failed.append(name)
    if args.update:
        baseline["instructions_per_request"] = figures
        path.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"{path} updated")
        return 0
    if failed:
        print(
            f"instructions per request grew more than {tolerance:.0%} in: {', '.join(failed)}. If the growth is "
            f"deliberate, run `make bench-instructions UPDATE=1` and say why in the commit.",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO, help="source tree the gateway runs from (default: here)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="plain", help="what the requests are")
    parser.add_argument(
        "--target",
        choices=("gateway", "floor", "floor-lowlevel"),
        default="gateway",
        help="the gateway, or the naive aiohttp relay (on the application router, or on aiohttp's low-level server)",
    )
    parser.add_argument("--requests", type=count(1, MAX_REQUESTS), default=2000, help="counted requests")
    parser.add_argument("--warmup", type=count(0, MAX_REQUESTS), default=300, help="requests before counting")
    parser.add_argument("--connections", type=count(1, MAX_CONNECTIONS), default=8, help="keep-alive connections")
    parser.add_argument("--check", type=Path, help="a baseline file: measure its scenarios and compare")
    parser.add_argument(
        "--usage", action="store_true", help="the usage store on (a SQLite file): its whole cost, writer included"
    )
    parser.add_argument("--update", action="store_true", help="with --check: write the measured figures")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_upstream())
        return 0
    if not (args.source / "gateway" / "__main__.py").is_file():
        parser.error("--source must be a source tree with gateway/__main__.py")
    if args.check is not None:
        return check(args)
    print(f"instructions per request: {measure_one(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
