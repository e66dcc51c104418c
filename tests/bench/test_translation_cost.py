"""The translation benchmark measures what it says: its stream is a real OpenAI stream, which the seed-001 rewrite
turns into one event per word and one stop with the usage."""

from __future__ import annotations

import orjson

from bench.translation_cost import stream
from gateway.dialects.envelope import ChatEvents
from gateway.telemetry.scanners import SseUsage


def test_the_benchmark_stream_is_translated_event_by_event() -> None:
    parts = stream(3)
    events = ChatEvents()
    out = b"".join(events.feed(part) for part in parts) + events.finish()
    payloads = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line]
    assert payloads == [
        {"type": "content_block_delta", "delta": {"text": "word0 "}},
        {"type": "content_block_delta", "delta": {"text": "word1 "}},
        {"type": "content_block_delta", "delta": {"text": "word2 "}},
        {"type": "message_stop", "finishReason": "stop", "usage": {"inputTokens": 9, "outputTokens": 3}},
    ]
    scanner = SseUsage()
    for part in parts:
        scanner.feed(part)
    assert scanner.usage == (9, 3, 0)  # input, output, cached
