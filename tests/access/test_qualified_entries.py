"""Provider-qualified model entries (`openai/*`) in client policies and in ALLOWED_MODELS judge the route taken: the
provider and the model name it receives. Groq serves a model whose bare name is `openai/gpt-oss-120b`; naming it
with `?provider=groq` (or a `provider` field) must not pass an `openai/*` entry, on chat, in `/v1/models` or
through `/proxy`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.access.keys import ClientPolicy
from gateway.config.providers import ProviderTable
from gateway.runtime.state import STATE
from tests.fakes.access import KeysFile, write_keys
from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import TINY, auth_settings, gateway_app
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import entry, table_of

Client = TestClient[web.Request, web.Application]

OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o")
# Groq's own names, two of them shaped like OpenAI ids.
GROQ_MODELS = ("openai/gpt-oss-120b", "openai/gpt-4o-mini", "llama-3")


def two_providers(openai: ChatProvider, groq: ChatProvider) -> ProviderTable:
    return table_of(entry("openai", f"{openai.url}/v1", aliases=["oai"]), entry("groq", f"{groq.url}/v1"))


def groq_only(groq: ChatProvider) -> ProviderTable:
    return table_of(entry("groq", f"{groq.url}/v1"))


@pytest.fixture
async def openai(aiohttp_server: Any) -> ChatProvider:
    return await ChatProvider(models=OPENAI_MODELS).start(aiohttp_server)


@pytest.fixture
async def groq(aiohttp_server: Any) -> ChatProvider:
    return await ChatProvider(models=GROQ_MODELS).start(aiohttp_server)


@pytest.fixture
def keys(tmp_path: Path) -> KeysFile:
    policies = {"openai-only": {"models": ["openai/*"]}, "oss": {"models": ["groq/openai/gpt-oss-120b"]}}
    return write_keys(tmp_path, {"narrow": {"policy": "openai-only"}, "oss": {"policy": "oss"}}, policies)


@pytest.fixture
async def keyed(aiohttp_client: Any, openai: ChatProvider, groq: ChatProvider, keys: KeysFile) -> Client:
    client: Client = await aiohttp_client(
        gateway_app(auth_settings(auth_keys_file=str(keys.path)), two_providers(openai, groq))
    )
    return client


@pytest.fixture
async def gated(aiohttp_client: Any, openai: ChatProvider, groq: ChatProvider) -> Client:
    client: Client = await aiohttp_client(
        gateway_app(replace(TINY, allowed_models=("openai/gpt-4o-mini",)), two_providers(openai, groq))
    )
    return client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = orjson.loads(await response.read())["error"]
    return error


async def listed(response: Any) -> list[str]:
    assert response.status == 200, await response.read()
    return [model["id"] for model in orjson.loads(await response.read())["data"]]


# --- the client policy, as a unit ----------------------------------------------------------------------------


def test_a_policy_judges_a_qualified_entry_against_the_names_it_is_given() -> None:
    names = table_of(entry("openai", "http://127.0.0.1:9/v1"), entry("groq", "http://127.0.0.1:9/v1")).names
    policy = ClientPolicy.parse("openai-only", {"models": ["openai/*"]})
    assert policy.allows("openai", "gpt-4o-mini", names)
    assert not policy.allows("groq", "openai/gpt-oss-120b", names)
    assert not policy.allows("groq", "llama-3", names)
    assert not policy.proxy  # a model-restricted policy has no /proxy unless it says so
    # Against a table without `openai`, the entry names no provider: it matches the bare name, as before.
    assert policy.allows("groq", "openai/gpt-oss-120b", table_of(entry("groq", "http://127.0.0.1:9/v1")).names)


# --- end to end: a client policy of `openai/*` -----------------------------------------------------------------


async def test_a_policy_of_openai_refuses_the_bare_name_on_another_provider(
    keyed: Client, keys: KeysFile, openai: ChatProvider, groq: ChatProvider
) -> None:
    headers = bearer(keys.key("narrow"))
    for path, body in (
        (f"{CHAT}?provider=groq", chat("openai/gpt-oss-120b")),
        (f"{CHAT}?provider=GROQ", chat("openai/gpt-4o-mini")),
        (CHAT, chat("openai/gpt-oss-120b", provider="groq")),
        (CHAT, chat("groq/openai/gpt-oss-120b", stream=True)),
    ):
        refused = await keyed.post(path, json=body, headers=headers)
        assert refused.status == 403, (path, body)
        assert (await error_of(refused))["code"] == "model_not_allowed"
    assert await error_of(
        await keyed.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-oss-120b"), headers=headers)
    ) == {
        "message": "model 'groq/openai/gpt-oss-120b' is not allowed for this client",
        "type": "permission_error",
        "code": "model_not_allowed",
    }
    assert groq.requests == []
    for path in (CHAT, f"{CHAT}?provider=openai", f"{CHAT}?provider=oai"):
        passed = await keyed.post(path, json=chat("openai/gpt-4o-mini"), headers=headers)
        assert passed.status == 200, await passed.read()
    assert [seen.json()["model"] for seen in openai.requests] == ["gpt-4o-mini"] * 3


async def test_a_policy_of_openai_lists_only_openai_and_has_no_proxy(
    keyed: Client, keys: KeysFile, groq: ChatProvider
) -> None:
    headers = bearer(keys.key("narrow"))
    assert await listed(await keyed.get("/v1/models", headers=headers)) == ["openai/gpt-4o-mini", "openai/gpt-4o"]
    assert await listed(await keyed.get("/v1/models?provider=groq", headers=headers)) == []
    assert await listed(await keyed.get("/v1/models?provider=openai", headers=headers)) == [
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
    ]
    for provider in ("groq", "openai"):
        proxied = await keyed.post(
            f"/proxy/{provider}/chat/completions", json=chat("openai/gpt-oss-120b"), headers=headers
        )
        assert proxied.status == 403
        assert (await error_of(proxied))["code"] == "proxy_not_allowed"
    assert [seen.path for seen in groq.requests] == ["/v1/models", "/v1/models"]


async def test_groqs_full_id_names_groqs_model(
    keyed: Client, keys: KeysFile, openai: ChatProvider, groq: ChatProvider
) -> None:
    headers = bearer(keys.key("oss"))
    assert (await keyed.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-oss-120b"), headers=headers)).status == 200
    assert (await keyed.post(CHAT, json=chat("groq/openai/gpt-oss-120b"), headers=headers)).status == 200
    assert (await keyed.post(CHAT, json=chat("openai/gpt-oss-120b"), headers=headers)).status == 403
    assert await listed(await keyed.get("/v1/models", headers=headers)) == ["groq/openai/gpt-oss-120b"]
    assert [seen.json()["model"] for seen in groq.requests if seen.path == "/v1/chat/completions"] == [
        "openai/gpt-oss-120b"
    ] * 2
    assert [seen.path for seen in openai.requests] == ["/v1/models"]


async def test_a_policy_follows_the_live_table(
    keyed: Client, keys: KeysFile, openai: ChatProvider, groq: ChatProvider
) -> None:
    """The keys file is read apart from the table: its entries are judged against the table of the request."""
    headers = bearer(keys.key("narrow"))
    state = keyed.app[STATE]
    state.swap(groq_only(groq))
    # No provider is called `openai` now: the entry is unqualified and matches Groq's bare name.
    assert (await keyed.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-oss-120b"), headers=headers)).status == 200
    state.swap(two_providers(openai, groq))
    assert (await keyed.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-oss-120b"), headers=headers)).status == 403


# --- end to end: ALLOWED_MODELS=openai/gpt-4o-mini ---------------------------------------------------------------


async def test_allowed_models_refuses_the_bare_name_on_another_provider(
    gated: Client, openai: ChatProvider, groq: ChatProvider
) -> None:
    for path, body in (
        (f"{CHAT}?provider=groq", chat("openai/gpt-oss-120b")),
        (f"{CHAT}?provider=groq", chat("openai/gpt-4o-mini")),
        (CHAT, chat("openai/gpt-4o-mini", provider="groq")),
    ):
        refused = await gated.post(path, json=body)
        assert refused.status == 403, (path, body)
        assert (await error_of(refused))["code"] == "model_not_allowed"
    assert await error_of(await gated.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-4o-mini"))) == {
        "message": "model 'groq/openai/gpt-4o-mini' is not allowed on this gateway",
        "type": "permission_error",
        "code": "model_not_allowed",
    }
    assert groq.requests == []
    passed = await gated.post(CHAT, json=chat("openai/gpt-4o-mini"))
    assert passed.status == 200, await passed.read()
    assert openai.last.json()["model"] == "gpt-4o-mini"
    assert await listed(await gated.get("/v1/models")) == ["openai/gpt-4o-mini"]
    assert await listed(await gated.get("/v1/models?provider=groq")) == []


async def test_allowed_models_is_rebuilt_with_each_table(
    gated: Client, openai: ChatProvider, groq: ChatProvider
) -> None:
    state = gated.app[STATE]
    state.swap(groq_only(groq))
    assert (await gated.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-4o-mini"))).status == 200
    state.swap(two_providers(openai, groq))
    assert (await gated.post(f"{CHAT}?provider=groq", json=chat("openai/gpt-4o-mini"))).status == 403
