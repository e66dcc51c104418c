import pytest

from gateway.routing.filters import ModelFilter, has_image_input
from tests.fakes.tables import entry, table_of


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


@pytest.mark.parametrize(
    ("body", "has_image"),
    [
        # The Responses API's input items.
        ({"input": "text"}, False),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, True),
        ({"input": ["an embedding's text", "another"]}, False),
        # Anthropic's image blocks, at the top of a message and inside a tool result.
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, True),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                     "content": [{"type": "image", "source": {}}]}]}]}, True),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "plain"}]}]}, False),
    ],
)  # fmt: skip
def test_image_detection_in_every_dialect(body, has_image) -> None:
    assert has_image_input(body) is has_image


# Provider-qualified entries: an entry whose part before the first `/` names a provider of the table (id or alias,
# in any case) matches only that provider's `provider/model` id, never a bare name (which may hold a slash) on
# another provider. Groq serves `openai/gpt-oss-120b` under that bare name.
NAMES = table_of(
    entry("openai", "http://127.0.0.1:9/v1", aliases=["oai"]), entry("groq", "http://127.0.0.1:9/v1")
).names


@pytest.mark.parametrize(
    ("allowed", "denied", "provider", "model", "ok"),
    [
        # The defect: the bare Groq name `openai/gpt-oss-120b` matched `openai/*`.
        (("openai/*",), (), "groq", "openai/gpt-oss-120b", False),
        (("openai/*",), (), "openai", "gpt-4o-mini", True),
        (("openai/gpt-4o-mini",), (), "groq", "openai/gpt-4o-mini", False),
        (("openai/gpt-oss-120b",), (), "groq", "openai/gpt-oss-120b", False),
        (("openai/gpt-4o-mini",), (), "openai", "gpt-4o-mini", True),
        (("OpenAI/GPT-4o-*",), (), "openai", "gpt-4o-mini", True),
        (("OpenAI/GPT-4o-*",), (), "groq", "openai/gpt-4o-mini", False),
        # An alias qualifies too, and means the provider's id.
        (("oai/gpt-4o-mini",), (), "openai", "gpt-4o-mini", True),
        (("OAI/*",), (), "openai", "gpt-4o-mini", True),
        (("oai/*",), (), "groq", "oai/gpt-4o-mini", False),
        # The Groq model is named by Groq's full id.
        (("groq/openai/gpt-oss-120b",), (), "groq", "openai/gpt-oss-120b", True),
        (("groq/openai/*",), (), "openai", "gpt-oss-120b", False),
        (("groq/*",), (), "groq", "openai/gpt-oss-120b", True),
        # Deny lists judge the same way: `openai/*` denies OpenAI's models, not Groq's.
        ((), ("openai/*",), "groq", "openai/gpt-oss-120b", True),
        ((), ("openai/*",), "openai", "gpt-4o", False),
        ((), ("groq/openai/*",), "groq", "openai/gpt-oss-120b", False),
        # Unqualified entries keep their meaning: the bare model on any provider, or a full id.
        (("gpt-4o",), (), "groq", "gpt-4o", True),
        (("*/gpt-oss-120b",), (), "groq", "openai/gpt-oss-120b", True),
        (("*gpt-oss*",), (), "groq", "openai/gpt-oss-120b", True),
        (("mistral/*",), (), "groq", "mistral/small", True),  # `mistral` is no provider of this table
        ((), ("*gpt-oss*",), "groq", "openai/gpt-oss-120b", False),
    ],
)
def test_qualified_entries_match_only_their_provider(allowed, denied, provider, model, ok) -> None:
    assert ModelFilter.of(allowed, denied, NAMES).allows(provider, model) is ok
    # The same filter built without names, then given them (a client policy, checked against the live table).
    assert ModelFilter.of(allowed, denied).bind(NAMES).allows(provider, model) is ok


def test_without_the_provider_in_the_table_an_entry_is_unqualified() -> None:
    groq_only = table_of(entry("groq", "http://127.0.0.1:9/v1")).names
    unbound = ModelFilter.of(["openai/*"])
    assert unbound.bind(groq_only).allows("groq", "openai/gpt-oss-120b")
    assert not unbound.bind(NAMES).allows("groq", "openai/gpt-oss-120b")


def test_bind_is_cached_per_table_and_free_without_lists() -> None:
    open_filter = ModelFilter.of()
    assert open_filter.bind(NAMES) is open_filter
    restricted = ModelFilter.of(["openai/*"], ["groq/*"])
    bound = restricted.bind(NAMES)
    assert bound is not restricted and restricted.bind(NAMES) is bound
    assert bound.bind(NAMES) is bound
    other = table_of(entry("openai", "http://127.0.0.1:9/v1")).names
    assert restricted.bind(other) is not bound and restricted.bind(NAMES).allows("openai", "gpt-4o")
