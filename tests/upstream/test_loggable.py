"""What relay warnings print of a provider's URL: never its query (where a key may travel), nor user and password
(`<ID>_API_URL=https://user:secret@host/v1`)."""

from __future__ import annotations

import pytest
from yarl import URL

from gateway.upstream.call import _loggable
from tests.fakes.tables import entry, table_of

PASSWORD = "url-password-7c1e9a"
KEY = "sk-query-key-3b5d8f"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://user:{PASSWORD}@api.example.com/v1/chat/completions", "https://api.example.com/v1/chat/completions"),
        (f"https://:{PASSWORD}@api.example.com:8443/v1", "https://api.example.com:8443/v1"),
        ("https://user@api.example.com/v1", "https://api.example.com/v1"),
        (f"https://api.example.com/v1/models?key={KEY}&alt=json", "https://api.example.com/v1/models"),
        ("http://127.0.0.1:9/v1/chat/completions", "http://127.0.0.1:9/v1/chat/completions"),
    ],
)
def test_user_info_and_query_are_dropped(url: str, shown: str) -> None:
    assert _loggable(URL(url)) == shown


def test_a_provider_url_with_a_password_from_the_environment() -> None:
    table = table_of(
        entry("acme", "https://acme.example/v1", "query"),
        env={"ACME_API_URL": f"https://ops:{PASSWORD}@acme.internal/v1", "ACME_API_KEY": KEY},
    )
    endpoint = table.providers["acme"].endpoints["chat"].url
    assert PASSWORD in str(endpoint) and KEY in str(endpoint)  # what the relay sends and might log
    assert _loggable(endpoint) == "https://acme.internal/v1/chat/completions"
