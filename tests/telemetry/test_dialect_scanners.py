"""Usage read from Anthropic's and the Responses API's streams as their bytes pass, however the reads split them."""

from __future__ import annotations

import pytest

from gateway.exchange import Usage
from gateway.telemetry.scanners import JsonUsage, MessagesSseUsage, ResponsesSseUsage
from tests.fakes.native import MESSAGE, MESSAGE_STREAM, response_events, sse


def fed(scanner: MessagesSseUsage | ResponsesSseUsage, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        scanner.feed(data[start : start + size])
    scanner.finish()


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_a_messages_stream_takes_input_from_message_start_and_the_last_output_count(size: int) -> None:
    scanner = MessagesSseUsage()
    fed(scanner, MESSAGE_STREAM, size)
    assert scanner.usage == Usage(5, 4)
    assert scanner.first_content_at is not None


def test_message_delta_counts_override_message_starts_cache_counts_included() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 4,
                                                            "output_tokens": 1}}}  # fmt: skip
    delta = {"type": "message_delta", "delta": {}, "usage": {"input_tokens": 11, "cache_read_input_tokens": None,
                                                             "output_tokens": 30}}  # fmt: skip
    scanner = MessagesSseUsage()
    scanner.feed(sse("message_start", start))
    assert scanner.usage == Usage(14, 1, 4)  # the cache reads are the cached input tokens
    scanner.feed(sse("message_delta", delta))
    scanner.finish()
    assert scanner.usage == Usage(15, 30, 4)


def test_an_anthropic_error_event_is_no_usage_and_no_first_token() -> None:
    scanner = MessagesSseUsage()
    fed(scanner, sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), 9)
    assert scanner.usage is None and scanner.first_content_at is None


@pytest.mark.parametrize("size", [1, 5, 333, 100_000])
def test_a_responses_stream_gives_its_id_and_the_terminal_events_usage(size: int) -> None:
    scanner = ResponsesSseUsage()
    fed(scanner, b"".join(response_events("resp_9", "one two", "m")), size)
    assert scanner.response_id == "resp_9"
    assert scanner.usage == Usage(8, 3)
    assert scanner.first_content_at is not None


def test_a_responses_stream_cut_before_its_end_has_an_id_but_no_usage() -> None:
    scanner = ResponsesSseUsage()
    fed(scanner, b"".join(response_events("resp_9", "one two", "m")[:-1]), 50)
    assert scanner.response_id == "resp_9" and scanner.usage is None


def test_whole_json_answers_of_both_apis_are_read() -> None:
    scanner = JsonUsage()
    scanner.whole(MESSAGE)
    assert scanner.usage == Usage(17, 6, 3)
