"""What translating a stream costs per chunk, in-process and without I/O: the seed-001 Inference API's
`/chat/stream` rewrites each OpenAI chat chunk into its own `content_block_delta` event as it passes
(`dialects.envelope.ChatEvents`), against the usage scanner every OpenAI stream already passes through.

    .venv/bin/python -m bench.translation_cost [--chunks 50] [--runs 9]

A stream of `--chunks` word chunks (one per read, as a provider's events usually arrive), its stop chunk, a usage
chunk and [DONE]; best of `--runs` runs of 2,000 streams each, in CPU time; prints a Markdown table of microseconds
per chunk.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from gateway.dialects.envelope import ChatEvents
from gateway.telemetry.scanners import SseUsage


def stream(chunks: int) -> list[bytes]:
    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    words = [event({"content": f"word{n} "}) for n in range(chunks)]
    usage = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks},
    }
    return [
        event({"role": "assistant", "content": ""}),
        *words,
        event({}, "stop"),
        b"data: " + orjson.dumps(usage) + b"\n\n",
        b"data: [DONE]\n\n",
    ]


def per_chunk(make: Callable[[], Callable[[bytes], object]], parts: list[bytes], streams: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for _ in range(streams):
            feed = make()
            for part in parts:
                feed(part)
        best = min(best, time.process_time() - started)
    return best / (streams * len(parts)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    parts = stream(args.chunks)
    streams = 2000

    def translated() -> Callable[[bytes], object]:
        return ChatEvents().feed

    def scanned() -> Callable[[bytes], object]:
        return SseUsage().feed

    translate = per_chunk(translated, parts, streams, args.runs)
    scan = per_chunk(scanned, parts, streams, args.runs)
    print("| per chunk of a streamed chat answer | µs |")
    print("| --- | --- |")
    print(f"| the usage scanner (every OpenAI stream) | {scan:.2f} |")
    print(f"| the seed-001 translation (`/api/v1/inference/chat/stream`) | {translate:.2f} |")


if __name__ == "__main__":
    main()
