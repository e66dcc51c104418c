"""The request record's usage: only plain, sane token counts are believed."""

from __future__ import annotations

import pytest

from gateway.exchange import MAX_TOKENS, Usage


def test_plain_counts_are_read() -> None:
    assert Usage.of({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}) == (3, 2, 0)


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        ({"cached_tokens": 2}, 2),
        ({"cached_tokens": 0}, 0),
        ({"cached_tokens": 4}, 0),  # more than the prompt: not believed
        ({"cached_tokens": True}, 0),
        ({"cached_tokens": "2"}, 0),
        ({}, 0),
        (None, 0),
        ([2], 0),
    ],
)
def test_cached_tokens_are_read_from_the_prompt_details(details: object, cached: int) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": details}
    assert Usage.of(usage) == Usage(3, 2, cached)


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
    assert Usage.of({"input_tokens": 8, "output_tokens": 3, "total_tokens": 11}) == (8, 3, 0)
    anthropic = {"input_tokens": 12, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 6}
    # The tokens read from the cache are the cached ones (for the usage store's cost); written ones are not.
    assert Usage.of(anthropic) == (17, 6, 3)
    assert Usage.of({**anthropic, "cache_read_input_tokens": None}) == (14, 6, 0)
    # OpenAI's Responses API says it in input_tokens_details.
    responses = {"input_tokens": 10, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 4}}
    assert Usage.of(responses) == (10, 2, 4)
    assert Usage.of({**anthropic, "cache_read_input_tokens": -1}) is None
    assert Usage.of({"input_tokens": MAX_TOKENS, "cache_read_input_tokens": 1, "output_tokens": 0}) is None
    assert Usage.of({"input_tokens": 5}) is None
