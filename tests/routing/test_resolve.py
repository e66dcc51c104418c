import pytest
import yaml

from gateway.config.providers import parse_table
from gateway.errors import ConfigError, InvalidRequest, NoProvider, ProviderNotConfigured
from gateway.routing.resolve import Grouped, resolve, target
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
    (route,) = resolve(TABLE, model, "chat", query_provider=query, body_provider=field)
    assert route.endpoint is route.provider.endpoints["chat"]
    assert (route.provider.id, route.model, route.requested) == (provider, forwarded, model)


def test_no_provider() -> None:
    with pytest.raises(NoProvider, match="'llama-3'"):
        resolve(TABLE, "llama-3", "chat")
    with pytest.raises(NoProvider, match="'meta-llama/llama-4'"):
        resolve(TABLE, "meta-llama/llama-4", "chat")
    with pytest.raises(NoProvider, match="unknown provider 'nope'"):
        resolve(TABLE, "gpt-4o", "chat", query_provider="nope")


def test_a_named_provider_without_a_model() -> None:
    with pytest.raises(InvalidRequest):
        resolve(TABLE, "openai/", "chat")


def test_unconfigured_providers_name_their_variable() -> None:
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY"):
        resolve(TABLE, "claude-3-opus", "chat")


def test_prefix_lookup_does_not_depend_on_table_size() -> None:
    # Lookups go by prefix length, never by scanning providers: 200 providers answer like one.
    big = table_of(*(entry(f"p{i}", f"https://p{i}", model_prefixes=[f"m{i}-"]) for i in range(200)))
    assert big.prefix_lengths == (5, 4, 3)
    assert resolve(big, "m150-x", "chat")[0].provider.id == "p150"


def _grouped(groups: dict, *entries: dict, env: dict | None = None):
    document = {"providers": {e["id"]: e for e in entries}, "models": groups}
    return parse_table(yaml.safe_dump(document), env or {}, source="test.yaml")


GROUPED = _grouped(
    {
        "llama-3.3-70b": {
            "deployments": [
                {"provider": "groq", "model": "llama-3.3-70b-versatile", "input_price": 0.59, "output_price": 0.79},
                {"provider": "deep", "model": "meta-llama/Llama-3.3-70B-Instruct", "weight": 2},
                {"provider": "local", "model": "llama3.3:70b"},
            ]
        },
        "gpt-4o": {
            "deployments": [
                {"provider": "azure", "model": "gpt-4o-2024-08-06"},
                {"provider": "openai", "model": "gpt-4o"},
            ]
        },
    },
    entry("groq", "https://q", "bearer"),
    entry("deep", "https://d", aliases=["deepinfra"]),
    entry("local", "http://l"),
    entry("openai", "https://o", model_prefixes=["gpt-"]),
    entry("azure", "https://a", "bearer"),
    env={"GROQ_API_KEY": "k"},
)


def test_a_model_served_by_several_providers_resolves_to_all_in_order() -> None:
    routes = resolve(GROUPED, "llama-3.3-70b", "chat")
    assert [(r.provider.id, r.model, r.requested) for r in routes] == [
        ("groq", "llama-3.3-70b-versatile", "llama-3.3-70b"),
        ("deep", "meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b"),
        ("local", "llama3.3:70b", "llama-3.3-70b"),
    ]
    group = GROUPED.group("LLAMA-3.3-70B")
    assert group is not None
    assert [(d.provider, d.weight, d.input_price, d.output_price) for d in group.deployments] == [
        ("groq", 1.0, 0.59, 0.79),
        ("deep", 2.0, None, None),
        ("local", 1.0, None, None),
    ]


def test_a_group_skips_unconfigured_deployments_and_says_why_when_none_is_left() -> None:
    # azure has no key: the group falls to openai; a provider/model id still pins one provider exactly.
    assert [r.provider.id for r in resolve(GROUPED, "gpt-4o", "chat")] == ["openai"]
    assert resolve(GROUPED, "openai/gpt-4o", "chat")[0].model == "gpt-4o"
    alone = _grouped(
        {"m": {"deployments": [{"provider": "azure", "model": "x"}]}}, entry("azure", "https://a", "bearer")
    )
    with pytest.raises(ProviderNotConfigured, match="no provider of model 'm' is configured: azure .*AZURE_API_KEY"):
        resolve(alone, "m", "chat")


def test_only_providers_that_declare_the_operation_are_candidates() -> None:
    embeds = entry("embeds", "https://e")
    embeds["endpoints"] = {"embeddings": {"name": "embeddings", "method": "POST", "endpoint": "/embeddings"}}
    table = _grouped(
        {"e5": {"deployments": [{"provider": "chatty", "model": "e5"}, {"provider": "embeds", "model": "e5-large"}]}},
        entry("chatty", "https://c", model_prefixes=["chat-"]),
        embeds,
    )
    assert [r.provider.id for r in resolve(table, "e5", "embeddings")] == ["embeds"]
    assert resolve(table, "e5", "embeddings")[0].endpoint.url.human_repr() == "https://e/embeddings"
    with pytest.raises(NoProvider, match="no provider of model 'e5' serves rerank"):
        resolve(table, "e5", "rerank")
    with pytest.raises(NoProvider, match="provider 'embeds' does not serve chat; it serves: embeddings"):
        resolve(table, "embeds/x", "chat")
    with pytest.raises(NoProvider, match="provider 'chatty' does not serve embeddings; it serves: chat, models"):
        resolve(table, "chat-1", "embeddings")


@pytest.mark.parametrize(
    ("groups", "problem"),
    [
        (
            {"m": {"deployments": [{"provider": "nope", "model": "x"}]}},
            "models.m.deployments.0.provider: no provider 'nope'",
        ),
        (
            {"m": {"deployments": [{"provider": "a", "model": "x"}, {"provider": "A", "model": "x"}]}},
            "models.m.deployments.1: provider 'a' with model 'x' twice",
        ),
        ({"a/x": {"deployments": [{"provider": "a", "model": "x"}]}}, "models.a/x: reads as a `provider/model` id"),
        (
            {
                "M": {"deployments": [{"provider": "a", "model": "x"}]},
                "m": {"deployments": [{"provider": "a", "model": "y"}]},
            },
            "models.m: the same name as model group 'M'",
        ),
        ({"m@x": {"deployments": [{"provider": "a", "model": "x"}]}}, "models: 'm@x' does not match"),
        ({"m": {"deployments": []}}, "models.m.deployments: the value is empty"),
        (
            {"m": {"deployments": [{"provider": "a", "model": "x", "weight": -1}]}},
            "models.m.deployments.0.weight: -1 is less than the minimum",
        ),
        ({"m": {"deployments": [{"provider": "a", "model": "x"}], "strategy": "cheap"}}, "models.m.strategy: 'cheap'"),
        (
            {"m": {"deployments": [{"provider": "a", "model": "x"}], "strategy": "price+price"}},
            "models.m.strategy: 'price+price' names a tag twice",
        ),
        (
            {"m": {"deployments": [{"provider": "a", "model": "x", "weight": 0}], "strategy": "weighted"}},
            "models.m.strategy: `weighted` needs a deployment whose weight is above 0",
        ),
        (
            {"m": {"deployments": [{"provider": "a", "model": "x"}], "explore": 0.9}},
            "models.m.explore: 0.9 is greater than the maximum",
        ),
        ({"m": {"deployments": [{"provider": "a", "model": "x"}], "attempts": 0}}, "models.m.attempts: 0 is less"),
        ({"m": {"deployments": [{"provider": "a", "model": "x"}], "budget": "soon"}}, "models.m.budget: 'soon'"),
        ({"m": {"deployments": [{"provider": "a", "model": "x"}], "retries": 2}}, "models.m: "),
    ],
)
def test_bad_model_groups_fail_at_load_naming_the_field(groups, problem) -> None:
    with pytest.raises(ConfigError) as raised:
        _grouped(groups, entry("a", "https://a"))
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_a_group_s_routing_fields_and_their_defaults() -> None:
    table = _grouped(
        {
            "plain": {"deployments": [{"provider": "a", "model": "x"}]},
            "tuned": {
                "deployments": [{"provider": "a", "model": "x"}],
                "strategy": "tokenrate+price",
                "explore": 0.1,
                "attempts": 2,
                "budget": "1m30s",
            },
        },
        entry("a", "https://a"),
    )
    plain, tuned = table.group("plain"), table.group("tuned")
    assert plain is not None and tuned is not None
    assert (plain.strategy, plain.explore, plain.attempts, plain.budget) == ("fallback", 0.05, 3, 30.0)
    # Tags in one order, whatever the table wrote.
    assert (tuned.strategy, tuned.explore, tuned.attempts, tuned.budget) == ("price+tokenrate", 0.1, 2, 90.0)


@pytest.mark.parametrize(
    ("model", "tags"),
    [
        ("llama-3.3-70b", None),
        ("LLAMA-3.3-70B@price", "price"),
        ("llama-3.3-70b@tokenrate@price", "price+tokenrate"),
        ("llama-3.3-70b@latency@tokenrate@price", "price+latency+tokenrate"),
    ],
)
def test_strategy_tags_follow_a_group_s_name(model: str, tags: str | None) -> None:
    found = target(GROUPED, model, "chat")
    assert isinstance(found, Grouped)
    assert (found.group.name, found.tags, found.requested) == ("llama-3.3-70b", tags, model)
    # resolve() lists the deployments in the table's order; the tags never reach a provider's model name.
    assert [r.model for r in resolve(GROUPED, model, "chat")][0] == "llama-3.3-70b-versatile"


@pytest.mark.parametrize("model", ["llama-3.3-70b@cheap", "llama-3.3-70b@price@", "llama-3.3-70b@"])
def test_an_unknown_tag_is_a_400_naming_the_known_ones(model: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        target(GROUPED, model, "chat")
    assert raised.value.code == "invalid_strategy"
    assert raised.value.message.endswith("the known tags are @price, @latency, @tokenrate")


def test_an_at_sign_outside_a_group_s_name_is_part_of_the_model() -> None:
    # Vertex-style versions (`claude-3-5-sonnet@20240620`) pass as the provider's own model names.
    (route,) = resolve(GROUPED, "gpt-5@2024", "chat")
    assert (route.provider.id, route.model) == ("openai", "gpt-5@2024")
    (route,) = resolve(GROUPED, "deep/llama@price", "chat")
    assert route.model == "llama@price"


def test_a_pinned_provider_serves_when_the_client_names_none() -> None:
    # `gpt-4o` routes to openai by prefix, and to groq when pinned there (it holds the previous response).
    assert [(r.provider.id, r.model) for r in resolve(TABLE, "gpt-4o", "chat", pinned="groq")] == [("groq", "gpt-4o")]
    # A provider the client names wins over the pin.
    assert resolve(TABLE, "openai/gpt-4o", "chat", pinned="groq")[0].provider.id == "openai"
    assert resolve(TABLE, "gpt-4o", "chat", query_provider="openai", pinned="groq")[0].provider.id == "openai"
    # A pin to a provider the table no longer has is no pin.
    assert resolve(TABLE, "gpt-4o", "chat", pinned="gone")[0].provider.id == "openai"


def test_a_pinned_model_group_keeps_the_pinned_providers_deployments_only() -> None:
    routes = resolve(GROUPED, "llama-3.3-70b", "chat", pinned="local")
    assert [(r.provider.id, r.model) for r in routes] == [("local", "llama3.3:70b")]
    with pytest.raises(NoProvider, match="made by provider 'openai', which does not serve model group"):
        resolve(GROUPED, "llama-3.3-70b", "chat", pinned="openai")
