import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config.providers import load_table, parse_table
from gateway.errors import ConfigError
from tests.fakes.gateways import ROOT
from tests.fakes.tables import entry, table_of

SPEC = ROOT.parent / "shared" / "spec" / "openapi.yaml"
SPEC_IDS = {
    "ollama", "ollama_cloud", "anthropic", "cohere", "groq", "openai",
    "cloudflare", "deepseek", "google", "mistral", "moonshot",
}  # fmt: skip


def test_the_shipped_table_has_the_eleven_spec_providers() -> None:
    table = load_table(ROOT / "providers.yaml", {})
    assert set(table.providers) == SPEC_IDS


# Where the shipped table knowingly differs from the spec's entries: Ollama on its own port (the spec says 8080).
SPEC_DEVIATIONS = {("ollama", "url"): "http://ollama:11434/v1"}


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not next to this checkout")
def test_the_shipped_table_matches_the_spec_entries() -> None:
    spec = yaml.safe_load(SPEC.read_text())["components"]["schemas"]["Provider"]["x-provider-configs"]
    ours = yaml.safe_load((ROOT / "providers.yaml").read_text())["providers"]
    for pid, theirs in spec.items():
        for key in ("id", "url", "auth_type", "supports_vision"):
            assert ours[pid][key] == SPEC_DEVIATIONS.get((pid, key), theirs[key]), (pid, key)
        # Every endpoint of the spec's entry, as the spec has it; ours may declare more (embeddings, ...).
        for name, endpoint in theirs["endpoints"].items():
            assert ours[pid]["endpoints"][name] == endpoint, (pid, name)


def test_the_shipped_ollama_is_on_ollamas_usual_port() -> None:
    table = load_table(ROOT / "providers.yaml", {})
    assert str(table.providers["ollama"].url) == "http://ollama:11434/v1"
    assert table.providers["ollama"].served  # no key needed


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not next to this checkout")
def test_an_openapi_document_is_read_as_a_table() -> None:
    table = load_table(SPEC, {"OPENAI_API_KEY": "sk-test"})
    assert set(table.providers) == SPEC_IDS
    assert str(table.providers["openai"].endpoints["chat"].url) == "https://api.openai.com/v1/chat/completions"


def test_every_schema_error_is_reported_with_its_path() -> None:
    bad = {
        "providers": {
            "openai": {**entry("openai", "https://x"), "auth_type": "beare", "colour": "red"},
            "groq": {**entry("groq", "ftp://x"), "supports_vision": "yes"},
        },
        "extra": 1,
    }
    with pytest.raises(ConfigError) as caught:
        parse_table(yaml.safe_dump(bad), {}, source="bad.yaml")
    problems = "\n".join(caught.value.problems)
    assert caught.value.source == "bad.yaml"
    # An auth-named field: the rule, never the value.
    assert "providers.openai.auth_type: the value is not one of ['bearer', 'xheader', 'query', 'none']" in problems
    assert "'beare'" not in problems
    assert "providers.openai: Additional properties are not allowed ('colour' was unexpected)" in problems
    assert "providers.groq.url: 'ftp://x' does not match" in problems
    assert "providers.groq.supports_vision: 'yes' is not of type 'boolean'" in problems
    assert "(top level): Additional properties are not allowed ('extra' was unexpected)" in problems
    assert len(caught.value.problems) == 5


HEADER_KEY = "sk-live-header-key-4f9a2c71"
URL_PASSWORD = "hunter2-url-password-88"
QUERY_KEY = "sk-live-query-key-61d0e3"
ENV_NAME_KEY = "sk-proj-pasted-as-a-name-19"
ENTRY_KEY = "sk-live-pasted-as-an-entry-5"


def test_schema_errors_name_file_field_and_rule_but_never_a_secret() -> None:
    """jsonschema's own messages quote the offending value: a header's, a URL with user info or a key in its query,
    a key pasted where a variable name goes. None of it may reach the start-up error (printed to stderr)."""
    bad = {
        "providers": {
            "a": entry(
                "a",
                f"https://admin:{URL_PASSWORD}@api.example.com/v1?key={QUERY_KEY}",
                "bearer",
                headers={"Authorization": f"Bearer {HEADER_KEY}\r\nX-Injected: 1"},
                api_key_env=ENV_NAME_KEY,
            ),
            "b": entry("b", f"{QUERY_KEY}", "bearer"),  # a key pasted in place of the URL
            "c": ENTRY_KEY,
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse_table(yaml.safe_dump(bad), {}, source="bad.yaml")
    shown_url = "https://api.example.com/v1?<query hidden>"
    url_pattern = "^https?://[^\\s/?#]+(/[^\\s?#]*)?$"
    assert caught.value.source == "bad.yaml"
    assert caught.value.problems == [
        "providers.a.api_key_env: the value does not match ^[A-Z_][A-Z0-9_]*$ (value hidden)",
        "providers.a.headers.Authorization: the value does not match ^[^\\r\\n]*$ (value hidden)",
        f"providers.a.url: '{shown_url}' (user info hidden) does not match {url_pattern!r}",
        f"providers.b.url: the value does not match {url_pattern} (value hidden)",
        "providers.c: the value is not of type 'object' (value hidden)",
    ]
    rendered = caught.value.render()
    assert rendered.startswith("invalid configuration in bad.yaml:\n")
    assert "  - providers.a.headers.Authorization: the value does not match" in rendered
    for secret in (HEADER_KEY, URL_PASSWORD, QUERY_KEY, ENV_NAME_KEY, ENTRY_KEY, "admin"):
        assert secret not in rendered and secret not in str(caught.value)


def test_values_that_cannot_be_secrets_are_still_quoted() -> None:
    bad = {"providers": {"a": {**entry("a", "https://a/v1"), "stream_usage": "yes", "aliases": ["Bad Alias"]}}}
    with pytest.raises(ConfigError) as caught:
        parse_table(yaml.safe_dump(bad), {})
    assert caught.value.problems == [
        "providers.a.aliases.0: 'Bad Alias' does not match '^[a-z][a-z0-9_.-]{0,62}$'",
        "providers.a.stream_usage: 'yes' is not of type 'boolean'",
    ]


def test_a_yaml_error_says_where_without_echoing_the_line() -> None:
    text = f"providers:\n  a:\n    headers:\n      Authorization: Bearer {HEADER_KEY}: oops\n"
    with pytest.raises(ConfigError) as caught:
        parse_table(text, {}, source="broken.yaml")
    assert caught.value.problems == ["not valid YAML: mapping values are not allowed here at line 4, column 56"]
    assert HEADER_KEY not in caught.value.render()


def test_ids_aliases_and_prefixes_must_be_unambiguous() -> None:
    doc = {
        "providers": {
            "a": entry("a", "https://a", aliases=["shared"], model_prefixes=["x-"]),
            "b": entry("b", "https://b", aliases=["shared"], model_prefixes=["X-"]),
            "c": entry("d", "https://c"),
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse_table(yaml.safe_dump(doc), {})
    assert caught.value.problems == [
        "providers.b.aliases: 'shared' is already a name of provider 'a'",
        "providers.b.model_prefixes: 'X-' is already a prefix of 'a'",
        "providers.c.id: 'd' differs from its key 'c'",
    ]


def test_yaml_syntax_errors_name_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_table("providers: [unclosed", {}, source="broken.yaml")
    assert caught.value.source == "broken.yaml"
    assert "not valid YAML" in caught.value.problems[0]


def test_env_overrides_url_and_key() -> None:
    table = table_of(
        entry("ollama_cloud", "https://ollama.com/v1", "bearer"),
        env={"OLLAMA_CLOUD_API_URL": "http://127.0.0.1:9/v1", "OLLAMA_CLOUD_API_KEY": "k1"},
    )
    provider = table.providers["ollama_cloud"]
    assert provider.served
    assert str(provider.endpoints["chat"].url) == "http://127.0.0.1:9/v1/chat/completions"
    assert (b"Authorization", b"Bearer k1") in provider.headers
    assert "k1" not in repr(provider)


def test_a_provider_without_its_key_is_not_served_and_says_which_variable() -> None:
    table = table_of(entry("openai", "https://api.openai.com/v1", "bearer"), env={})
    assert table.providers["openai"].unavailable == "missing API key: set OPENAI_API_KEY"


def test_placeholders_are_filled_from_the_environment() -> None:
    cf = entry("cloudflare", "https://api.cloudflare.com/client/v4/accounts/{ACCOUNT_ID}/ai", "bearer")
    missing = table_of(cf, env={"CLOUDFLARE_API_KEY": "k"}).providers["cloudflare"]
    assert missing.unavailable == "its URL needs CLOUDFLARE_ACCOUNT_ID"
    filled = table_of(cf, env={"CLOUDFLARE_API_KEY": "k", "CLOUDFLARE_ACCOUNT_ID": "acc1"}).providers["cloudflare"]
    assert str(filled.base_url) == "https://api.cloudflare.com/client/v4/accounts/acc1/ai"


def test_a_bad_url_from_the_environment_makes_the_provider_unserved() -> None:
    table = table_of(entry("ollama", "http://ollama:8080/v1"), env={"OLLAMA_API_URL": "not a url"})
    assert table.providers["ollama"].unavailable.startswith("bad URL 'not a url' (from OLLAMA_API_URL)")


def test_auth_styles_are_built_from_the_table() -> None:
    env = {"A_API_KEY": "ka", "B_API_KEY": "kb", "C_API_KEY": "kc", "D_API_KEY": "kd"}
    table = table_of(
        entry("a", "https://a/v1", "xheader", headers={"anthropic-version": "2023-06-01"}),
        entry("b", "https://b/v1", "xheader", auth_header="x-goog-api-key"),
        entry("c", "https://c/v1", "query"),
        entry("d", "https://d/v1", "query", auth_query="api_key"),
        env=env,
    )
    a, b, c, d = (table.providers[x] for x in "abcd")
    assert a.headers == ((b"anthropic-version", b"2023-06-01"), (b"x-api-key", b"ka"))
    assert a.header_names == {b"anthropic-version", b"x-api-key"}
    assert b.headers == ((b"x-goog-api-key", b"kb"),)
    assert (
        str(c.endpoints["chat"].url) == "https://c/v1/chat/completions?key=kc"
        and c.headers == ()
        and not c.header_names
    )
    assert str(d.endpoints["models"].url) == "https://d/v1/models?api_key=kd"


def test_a_custom_key_variable_can_be_named() -> None:
    table = table_of(entry("google", "https://g", "bearer", api_key_env="GEMINI_API_KEY"), env={"GEMINI_API_KEY": "g"})
    assert table.providers["google"].served


def test_the_gateway_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text(yaml.safe_dump({"providers": {"x": {**entry("x", "https://x"), "auth_type": "magic"}}}))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--providers", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"invalid configuration in {bad}" in done.stderr
    assert "providers.x.auth_type: the value is not one of" in done.stderr and "magic" not in done.stderr
