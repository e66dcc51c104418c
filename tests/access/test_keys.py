"""The keys file, key lookup, the `keys` CLI and the access-control settings."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.access.keys import UNRESTRICTED, ClientPolicy, hash_key, load_keys, new_key, parse_keys
from gateway.config.settings import Settings
from gateway.errors import ConfigError
from tests.fakes.tables import entry, table_of

# The provider names policies are judged against (a table's, at check time).
NAMES = table_of(*(entry(pid, "http://127.0.0.1:9/v1") for pid in ("fake", "openai", "groq"))).names


def test_new_key_has_the_documented_shape_and_hash() -> None:
    made = new_key()
    prefix, key_id, secret = made.key.split("_", 2)
    assert prefix == "gwk" and key_id == made.key_id and len(key_id) == 12 and len(secret) == 43
    assert made.sha256 == hashlib.sha256(made.key.encode()).hexdigest() == hash_key(made.key)
    assert new_key().key != made.key


def test_the_printed_line_is_a_valid_keys_file_entry() -> None:
    made = new_key()
    text = "policies: {team: {models: [fake/*]}}\nkeys:\n" + made.entry_line("ci-bot", "team") + "\n"
    store = parse_keys(text)
    entry = store.find(made.key)
    assert entry is not None and entry.name == "ci-bot" and entry.policy.name == "team" and not entry.revoked


def test_find_matches_only_the_exact_key() -> None:
    a, b = new_key(), new_key()
    store = parse_keys(f"keys:\n{a.entry_line('a')}\n{b.entry_line('b')}\n")
    assert store.find(a.key).name == "a"  # type: ignore[union-attr]
    assert store.find(b.key).name == "b"  # type: ignore[union-attr]
    # The right id with another secret, a truncated key, and nothing at all.
    assert store.find(f"gwk_{a.key_id}_{b.key.split('_', 2)[2]}") is None
    assert store.find(a.key[:-1]) is None
    assert store.find("") is None


def test_keys_of_another_format_are_found_by_hash() -> None:
    legacy = "sk-legacy-" + "x" * 40
    store = parse_keys(f'keys:\n  - {{name: old, sha256: "{hash_key(legacy)}"}}\n')
    assert store.find(legacy).name == "old"  # type: ignore[union-attr]
    assert store.find(legacy + "y") is None


def test_policies_and_the_default_policy() -> None:
    a, b = new_key(), new_key()
    text = f"""
policies:
  default: {{models: ["fake/alpha-*"], requests_per_minute: 10}}
  free: {{inference: false}}
keys:
{a.entry_line("a")}
{b.entry_line("b", "free")}
"""
    store = parse_keys(text)
    default = store.find(a.key).policy  # type: ignore[union-attr]
    assert default.name == "default" and default.requests_per_minute == 10 and not default.proxy
    assert default.allows("fake", "alpha-1", NAMES) and not default.allows("fake", "beta-1", NAMES)
    free = store.find(b.key).policy  # type: ignore[union-attr]
    assert free.name == "free" and not free.inference and free.proxy


def test_policy_fields() -> None:
    policy = ClientPolicy.parse(
        "p", {"providers": ["open*"], "denied_models": ["*-preview"], "tokens_per_minute": 5, "proxy": True}
    )
    assert policy.allows("openai", "gpt-4o", NAMES) and not policy.allows("openai", "gpt-5-preview", NAMES)
    assert not policy.allows("groq", "llama", NAMES)
    assert policy.proxy and (policy.requests_per_minute, policy.tokens_per_minute) == (None, 5)
    assert UNRESTRICTED.allows("any", "thing", NAMES) and UNRESTRICTED.proxy
    assert UNRESTRICTED.requests_per_minute is None and UNRESTRICTED.tokens_per_minute is None


def test_every_problem_is_reported_without_echoing_values() -> None:
    secret_looking = "gwk_0123456789ab_" + "s" * 43
    text = f"""
policies:
  team: {{models: "not-a-list", rpm: 3}}
keys:
  - {{name: a, sha256: "{secret_looking}"}}
  - {{name: "bad name", sha256: "{"0" * 64}", id: "XYZ"}}
  - {{sha256: "{"1" * 64}"}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_keys(text, "keys.yaml")
    problems = caught.value.problems
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    assert secret_looking not in joined and "ssss" not in joined
    assert "$.keys[0].sha256: does not match" in joined
    assert "$.keys[1].name: does not match" in joined
    assert "$.keys[1].id: does not match" in joined
    assert "$.keys[2]: 'name' is a required property" in joined
    assert "$.policies.team: Additional properties are not allowed ('rpm' was unexpected)" in joined
    assert "$.policies.team.models" in joined


def test_duplicates_and_unknown_policies_are_refused() -> None:
    a = new_key()
    text = f"keys:\n{a.entry_line('a')}\n{a.entry_line('a')}\n{new_key().entry_line('c', 'nope')}\n"
    with pytest.raises(ConfigError) as caught:
        parse_keys(text)
    assert caught.value.problems == [
        "keys[1]: the name 'a' is used twice",
        "keys[1]: the same key hash appears twice",
        f"keys[1]: the id {a.key_id!r} is used twice",
        "keys[2]: unknown policy 'nope'",
    ]


def test_an_empty_file_is_no_keys_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert len(parse_keys("")) == 0
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_keys(tmp_path / "absent.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_new_prints_a_key_once_and_the_line_that_admits_it(tmp_path: Path) -> None:
    done = _cli("new", "ci-bot", "--policy", "team")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    key = lines[1].strip()
    entry = lines[3]
    assert key.startswith("gwk_") and done.stdout.count(key) == 1
    path = tmp_path / "keys.yaml"
    path.write_text("policies:\n  team: {}\nkeys:\n" + entry + "\n")
    stored = yaml.safe_load(path.read_text())["keys"][0]
    assert stored["sha256"] == hash_key(key) and key not in path.read_text()
    assert load_keys(path).find(key).name == "ci-bot"  # type: ignore[union-attr]
    check = _cli("check", str(path))
    assert (check.returncode, check.stdout.strip()) == (0, f"{path}: 1 keys, 1 policies")


def test_cli_refuses_a_bad_name_and_a_bad_file(tmp_path: Path) -> None:
    assert _cli("new", "bad name").returncode == 2
    path = tmp_path / "keys.yaml"
    path.write_text("keys: 3\n")
    done = _cli("check", str(path))
    assert done.returncode == 2 and "$.keys: 3 is not of type 'array'" in done.stderr


# --- settings -------------------------------------------------------------------------------------------------


def test_auth_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "AUTH_ENABLED": "true",
            "AUTH_KEYS_FILE": "/etc/gateway/keys.yaml",
            "AUTH_OIDC_ISSUER": "https://id.example.com/realms/x/",
            "AUTH_OIDC_CLIENT_ID": "gateway",
            "AUTH_OIDC_CLIENT_SECRET": "s3cret",
            "AUTH_OIDC_POLICY_CLAIM": "gateway_policy",
            "REDIS_URL": "redis://:hunter2@redis:6379/0",
            "RATELIMIT_REDIS_FAILURE": "closed",
        }
    )
    assert settings.auth_enable and settings.auth_keys_file == "/etc/gateway/keys.yaml"
    assert settings.auth_oidc_issuer == "https://id.example.com/realms/x"
    assert settings.auth_oidc_policy_claim == "gateway_policy" and not settings.ratelimit_fail_open
    assert "hunter2" not in repr(settings) and "s3cret" not in repr(settings)
    assert Settings.from_env({"AUTH_ENABLE": "1", "AUTH_KEYS_FILE": "k"}).auth_enable
    assert not Settings.from_env({}).auth_enable


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"AUTH_ENABLE": "true"}, "AUTH_ENABLE needs AUTH_KEYS_FILE or AUTH_OIDC_ISSUER"),
        ({"AUTH_ENABLE": "true", "AUTH_ENABLED": "false", "AUTH_KEYS_FILE": "k"}, "disagree"),
        ({"AUTH_OIDC_ISSUER": "https://id.example.com"}, "needs AUTH_OIDC_CLIENT_ID"),
        ({"AUTH_OIDC_ISSUER": "http://id.example.com", "AUTH_OIDC_CLIENT_ID": "g"}, "must be an https:// URL"),
        ({"REDIS_URL": "http://redis:6379"}, "REDIS_URL must start with"),
        ({"RATELIMIT_REDIS_FAILURE": "maybe"}, "RATELIMIT_REDIS_FAILURE"),
    ],
)
def test_bad_auth_settings_are_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env(env)


def test_plain_http_issuer_is_allowed_on_loopback_only() -> None:
    settings = Settings.from_env({"AUTH_OIDC_ISSUER": "http://127.0.0.1:9999", "AUTH_OIDC_CLIENT_ID": "g"})
    assert settings.auth_oidc_issuer == "http://127.0.0.1:9999"
