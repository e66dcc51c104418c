"""ProviderTable.by_prefix remembers its answers per model name, bounded, without changing them."""

from __future__ import annotations

from gateway.config import providers
from gateway.config.providers import Endpoint, Provider, index_table


def _provider(pid: str, *prefixes: str) -> Provider:
    endpoint = Endpoint("chat_completions", "POST", "/chat/completions")
    return Provider(pid, "http://127.0.0.1:1/v1", "none", False, {"chat": endpoint}, model_prefixes=prefixes)


def test_remembered_answers_are_the_scanned_ones() -> None:
    table = index_table({"a": _provider("a", "gpt-"), "b": _provider("b", "gpt-4o-", "claude")})
    for _ in range(2):  # the second round is answered from the memo
        assert table.by_prefix("gpt-4o-mini") is table.providers["b"]
        assert table.by_prefix("GPT-3.5") is table.providers["a"]
        assert table.by_prefix("claude-3") is table.providers["b"]
        assert table.by_prefix("llama") is None
    assert table.memo == {
        "gpt-4o-mini": table.providers["b"],
        "GPT-3.5": table.providers["a"],
        "claude-3": table.providers["b"],
        "llama": None,
    }


def test_memo_is_bounded_in_entries_and_key_length() -> None:
    table = index_table({"a": _provider("a", "m-")})
    long_name = "m-" + "x" * providers._MEMO_KEY_MAX
    assert table.by_prefix(long_name) is table.providers["a"]
    assert long_name not in table.memo
    for index in range(providers._MEMO_ENTRIES + 10):
        table.by_prefix(f"m-{index}")
    assert 0 < len(table.memo) <= providers._MEMO_ENTRIES
