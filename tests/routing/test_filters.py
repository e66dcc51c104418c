import pytest

from gateway.routing.filters import ModelFilter, has_image_input


@pytest.mark.parametrize(
    ("allowed", "denied", "provider", "model", "ok"),
    [
        ((), (), "openai", "gpt-4o", True),
        (("openai/gpt-4o",), (), "openai", "GPT-4o", True),
        (("gpt-4o",), (), "groq", "gpt-4o", True),
        (("openai/gpt-4o",), (), "groq", "gpt-4o", False),
        (("claude-*",), (), "anthropic", "claude-3-opus", True),
        (("anthropic/*",), (), "anthropic", "anything", True),
        (("anthropic/*",), (), "openai", "anything", False),
        (("gpt-4o",), ("gpt-4o",), "openai", "gpt-4o", True),
        ((), ("openai/*",), "openai", "gpt-4o", False),
        ((), ("gpt-4o",), "openai", "gpt-4o-mini", True),
    ],
)
def test_filter(allowed, denied, provider, model, ok) -> None:
    assert ModelFilter.of(allowed, denied).allows(provider, model) is ok


@pytest.mark.parametrize(
    ("messages", "has_image"),
    [
        ([{"role": "user", "content": "text"}], False),
        ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], False),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], True),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], True),
        (["not an object", {"content": None}], False),
    ],
)
def test_image_detection(messages, has_image) -> None:
    assert has_image_input({"messages": messages}) is has_image
