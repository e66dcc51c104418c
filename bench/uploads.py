"""The upload benchmark: a 25 MB transcription upload through a gateway process to a sink provider, measuring the
gateway's resident memory while it relays (how much above its idle level) and the throughput, against the same
upload sent to the sink directly in the same run.

    .venv/bin/python -m bench.uploads            # 25 MB, 3 rounds
    .venv/bin/python -m bench.uploads --mb 100 --rounds 5

Everything runs on 127.0.0.1; the processes it starts are stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.targets import HOST, Processes, free_port, wait_port

BOUNDARY = "bench-upload-boundary"
CHUNK = 64 * 1024
PATH = "/v1/audio/transcriptions"
TABLE = """
body_limits:
  audio_transcriptions: 1073741824
providers:
  sink:
    id: sink
    url: http://{host}:{port}/v1
    auth_type: none
    model_prefixes: [whisper-]
    endpoints:
      audio_transcriptions: {{name: audio_transcriptions, method: POST, endpoint: /audio/transcriptions}}
"""


async def sink(request: web.Request) -> web.Response:
    """Reads the upload as it comes and answers its size and checksum."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


def serve_sink(port: int) -> None:
    app = web.Application()
    app.router.add_post(PATH, sink)
    web.run_app(app, host=HOST, port=port, print=None)


def body_parts(size: int) -> tuple[bytes, bytes, int]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nsink/whisper-1\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


async def chunks(head: bytes, size: int, tail: bytes) -> AsyncIterator[bytes]:
    """The form, its file made up as it goes (the client holds no more than a chunk either)."""
    yield head
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece
    yield tail


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def upload(session: aiohttp.ClientSession, url: str, size: int, model: str) -> float:
    head, tail, length = body_parts(size)
    head = head.replace(b"sink/whisper-1", model.encode())
    length = len(head) + size + len(tail)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(length)}
    started = time.perf_counter()
    async with session.post(url, data=chunks(head, size, tail), headers=headers) as response:
        answer = await response.json()
        if response.status != 200 or answer.get("bytes", 0) < size:
            raise SystemExit(f"upload failed: {response.status} {answer}")
    return time.perf_counter() - started


async def measure(gateway: int, sink_port: int, pid: int, size: int, rounds: int) -> dict[str, float]:
    peak = 0
    running = True

    async def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.002)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        via = f"http://{HOST}:{gateway}{PATH}"
        direct = f"http://{HOST}:{sink_port}{PATH}"
        for _ in range(3):  # warm: imports, the pool's connection, the allocator's arenas
            await upload(session, via, size // 8, "sink/whisper-1")
        await asyncio.sleep(0.5)
        idle = rss_kb(pid)
        sampler = asyncio.ensure_future(sample())  # noqa: TID251 - a benchmark's sampler, awaited below
        gateway_times = [await upload(session, via, size, "sink/whisper-1") for _ in range(rounds)]
        running = False
        await sampler
        direct_times = [await upload(session, direct, size, "whisper-1") for _ in range(rounds)]
    mb = size / 1e6
    return {
        "upload_mb": mb,
        "rounds": rounds,
        "idle_rss_mb": idle / 1024,
        "peak_rss_mb": peak / 1024,
        "rss_rise_mb": (peak - idle) / 1024,
        "gateway_mb_s": mb / min(gateway_times),
        "direct_mb_s": mb / min(direct_times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=25.0, help="upload size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        serve_sink(args.sink)
        return 0
    with tempfile.TemporaryDirectory() as work, Processes(Path(work)) as procs:
        sink_port, port = free_port(), free_port()
        sink_process = procs.start("sink", [sys.executable, "-m", "bench.uploads", "--sink", str(sink_port)])
        wait_port(sink_port, sink_process)
        table = Path(work) / "providers.yaml"
        table.write_text(TABLE.format(host=HOST, port=sink_port))
        command = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(port), "--providers", str(table)]
        gateway = procs.start("gateway", command, env={"PATH": "/usr/bin:/bin", "ENVIRONMENT": "production"})
        wait_port(port, gateway)
        result = asyncio.run(measure(port, sink_port, gateway.pid, int(args.mb * 1e6), args.rounds))
    print(
        f"upload {result['upload_mb']:.0f} MB x {result['rounds']}: gateway RSS {result['idle_rss_mb']:.1f} MB idle, "
        f"{result['peak_rss_mb']:.1f} MB peak (+{result['rss_rise_mb']:.1f} MB); "
        f"{result['gateway_mb_s']:.0f} MB/s through the gateway, {result['direct_mb_s']:.0f} MB/s direct "
        f"({result['gateway_mb_s'] / result['direct_mb_s']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
