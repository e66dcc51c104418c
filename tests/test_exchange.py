"""The request record's usage: only plain, sane token counts are believed."""

from __future__ import annotations

import pytest

from gateway.exchange import MAX_TOKENS, Usage


def test_plain_counts_are_read() -> None:
    assert Usage.of({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}) == (3, 2)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": True, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": 2**64 - 1},
        {"prompt_tokens": -1, "completion_tokens": 2},
        {"prompt_tokens": 3.0, "completion_tokens": 2},
        {"prompt_tokens": MAX_TOKENS + 1, "completion_tokens": 0},
        {"completion_tokens": 2},
        [3, 2],
    ],
)
def test_anything_else_is_no_usage(usage: object) -> None:
    assert Usage.of(usage) is None


def test_anthropic_and_responses_usage_is_read_with_cache_tokens_as_input() -> None:
    assert Usage.of({"input_tokens": 8, "output_tokens": 3, "total_tokens": 11}) == (8, 3)
    anthropic = {"input_tokens": 12, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 6}
    assert Usage.of(anthropic) == (17, 6)
    assert Usage.of({**anthropic, "cache_read_input_tokens": None}) == (14, 6)
    assert Usage.of({**anthropic, "cache_read_input_tokens": -1}) is None
    assert Usage.of({"input_tokens": MAX_TOKENS, "cache_read_input_tokens": 1, "output_tokens": 0}) is None
    assert Usage.of({"input_tokens": 5}) is None
