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
