import pytest

from gateway.errors import InvalidRequest, NoProvider, ProviderNotConfigured
from gateway.routing.resolve import resolve
from tests.fakes.tables import entry, table_of

TABLE = table_of(
    entry("openai", "https://o", "bearer", model_prefixes=["gpt-", "o1", "text-embedding-3"]),
    entry("anthropic", "https://a", "xheader", aliases=["claude"], model_prefixes=["claude"]),
    entry("google", "https://g", aliases=["gemini", "google-gemini"], model_prefixes=["gemini", "gemini-2.0-pro"]),
    entry("groq", "https://q", "bearer"),
    env={"OPENAI_API_KEY": "k", "GROQ_API_KEY": "k"},
)


@pytest.mark.parametrize(
    ("model", "query", "field", "provider", "forwarded"),
    [
        ("gpt-4o", None, None, "openai", "gpt-4o"),
        ("openai/gpt-4o", None, None, "openai", "gpt-4o"),
        ("OpenAI/gpt-4o", None, None, "openai", "gpt-4o"),
        ("gemini-2.0-pro-exp", None, None, "google", "gemini-2.0-pro-exp"),
        ("gemini/gemini-pro", None, None, "google", "gemini-pro"),
        ("x", "groq", None, "groq", "x"),
        ("x", None, "GROQ", "groq", "x"),
        ("x", "groq", "google", "groq", "x"),
        ("groq/x", "groq", None, "groq", "x"),
        ("openai/gpt-oss", "groq", None, "groq", "openai/gpt-oss"),
        ("meta-llama/llama-4", "groq", None, "groq", "meta-llama/llama-4"),
        ("text-embedding-3-small", None, None, "openai", "text-embedding-3-small"),
    ],
)
def test_resolution_order(model, query, field, provider, forwarded) -> None:
    route = resolve(TABLE, model, query_provider=query, body_provider=field)
    assert (route.provider.id, route.model, route.requested) == (provider, forwarded, model)


def test_no_provider() -> None:
    with pytest.raises(NoProvider, match="'llama-3'"):
        resolve(TABLE, "llama-3")
    with pytest.raises(NoProvider, match="'meta-llama/llama-4'"):
        resolve(TABLE, "meta-llama/llama-4")
    with pytest.raises(NoProvider, match="unknown provider 'nope'"):
        resolve(TABLE, "gpt-4o", query_provider="nope")


def test_a_named_provider_without_a_model() -> None:
    with pytest.raises(InvalidRequest):
        resolve(TABLE, "openai/")


def test_unconfigured_providers_name_their_variable() -> None:
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY"):
        resolve(TABLE, "claude-3-opus")


def test_prefix_lookup_does_not_depend_on_table_size() -> None:
    # Lookups go by prefix length, never by scanning providers: 200 providers answer like one.
    big = table_of(*(entry(f"p{i}", f"https://p{i}", model_prefixes=[f"m{i}-"]) for i in range(200)))
    assert big.prefix_lengths == (5, 4, 3)
    assert resolve(big, "m150-x").provider.id == "p150"
