"""The Inference API's provider registry (`/api/v1/inference/providers`) and model sync (`/models`, `/models/sync`)
on one gateway in this process, over a real SQLite store, with real fake providers behind the repository's own
providers.yaml: register, read by id and by name, update, delete; the file's entries listed and read-only; who may
change it; a registered provider serving a chat with the key from the variable it names, or "not configured"
without it; model lists synced, stored and listed. Replicas, restarts and PostgreSQL: tests/process/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.runtime.state import STATE
from tests.fakes.access import write_keys
from tests.fakes.gateways import TINY, Gateway, start_gateway
from tests.fakes.providers import SurfacesProvider
from tests.fakes.tables import PROVIDER_KEY, shipped_table
from tests.fakes.usage import store_ready

API = "/api/v1/inference"
EU_KEY = "sk-eu-registered-key-4242424242"


async def _gateway(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, env: dict[str, str] | None = None, **settings: Any
) -> tuple[Gateway, SurfacesProvider]:
    openai = await SurfacesProvider().start(aiohttp_server)
    table = shipped_table({"openai": f"{openai.url}/v1"})
    values: dict[str, Any] = {"usage_store": str(tmp_path / "usage.db"), "registry_write_enable": True}
    values.update(settings)
    gateway = await start_gateway(aiohttp_client, table, TINY, **values)
    # Registered providers' keys are read from this environment at each merge (the process's, in production).
    environ = dict(env or {})
    gateway.app[STATE].env = lambda: environ
    await store_ready(gateway.app)
    return gateway, openai


async def _call(gateway: Gateway, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
    response = await gateway.client.request(method, API + path, data=data, headers=headers)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status, orjson.loads(await response.read())


def _error(answer: Any) -> tuple[str, str]:
    assert answer["success"] is False and set(answer) == {"success", "error"}
    return answer["error"]["code"], answer["error"]["message"]


async def test_register_read_update_delete(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    gateway, openai = await _gateway(aiohttp_client, aiohttp_server, tmp_path, {"OPENAI_EU_API_KEY": EU_KEY})
    body = {"name": "openai-eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY", "url": f"{openai.url}/v1"}
    status, created = await _call(gateway, "POST", "/providers", body)
    assert status == 201 and created["success"] is True
    data = created["data"]
    pid = data["id"]
    assert len(pid) == 12 and int(pid, 16) >= 0
    assert data["created"] == data["updated"] and data["created"].endswith("Z")
    assert data == {
        "id": pid,
        "name": "openai-eu",
        "type": "openai",
        "defaultModel": None,
        "envVar": "OPENAI_EU_API_KEY",
        "url": f"{openai.url}/v1",
        "endpoints": {},
        "source": "registry",
        "readOnly": False,
        "configured": True,
        "problem": None,
        "serves": sorted(gateway.app[STATE].file_table.providers["openai"].endpoints),
        "created": data["created"],
        "updated": data["created"],
    }
    # By id and by name, the same.
    assert await _call(gateway, "GET", f"/providers/{pid}") == (200, created)
    assert await _call(gateway, "GET", "/providers/openai-eu") == (200, created)
    # The list: the file's entries first (read-only), then the registered one.
    status, listed = await _call(gateway, "GET", "/providers")
    names = [(p["name"], p["source"]) for p in listed["data"]]
    assert names[-1] == ("openai-eu", "registry")
    assert ("openai", "file") in names and ("anthropic", "file") in names
    file_openai = next(p for p in listed["data"] if p["name"] == "openai")
    assert file_openai["readOnly"] is True and file_openai["file"] == "providers.yaml"
    assert file_openai["configured"] is True and file_openai["envVar"] == "OPENAI_API_KEY"
    anthropic = next(p for p in listed["data"] if p["name"] == "anthropic")
    assert anthropic["configured"] is False and anthropic["problem"] == "missing API key: set ANTHROPIC_API_KEY"

    status, updated = await _call(gateway, "PUT", "/providers/openai-eu", {"defaultModel": "gpt-4o"})
    assert status == 200
    assert updated["data"]["defaultModel"] == "gpt-4o" and updated["data"]["id"] == pid
    assert updated["data"]["created"] == data["created"]
    assert await _call(gateway, "GET", f"/providers/{pid}") == (200, updated)

    status, deleted = await _call(gateway, "DELETE", f"/providers/{pid}")
    assert (status, deleted) == (200, {"success": True, "data": {"id": pid, "name": "openai-eu", "deleted": True}})
    assert _error((await _call(gateway, "GET", f"/providers/{pid}"))[1])[0] == "NOT_FOUND"
    assert "openai-eu" not in gateway.app[STATE].table.providers
    status, answer = await _call(gateway, "DELETE", "/providers/openai-eu")
    assert status == 404 and _error(answer) == ("NOT_FOUND", "no provider 'openai-eu'")


async def test_a_chat_reaches_the_registered_provider_with_the_key_its_variable_holds(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, openai = await _gateway(aiohttp_client, aiohttp_server, tmp_path, {"OPENAI_EU_API_KEY": EU_KEY})
    # The type's URL, auth and endpoints: only the URL is moved to the fake (as OPENAI_EU_API_URL would).
    body = {"name": "openai-eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY", "url": f"{openai.url}/v1"}
    assert (await _call(gateway, "POST", "/providers", body))[0] == 201
    chat = {"model": "gpt-4o", "provider": "openai-eu", "messages": [{"role": "user", "content": "hi"}]}
    status, answer = await _call(gateway, "POST", "/chat", chat)
    assert status == 200 and answer["data"]["provider"] == "openai-eu"
    seen = openai.last
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {EU_KEY}"
    assert seen.body == b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    # The file's own openai, at the same fake, still sends its own key.
    del chat["provider"]
    assert (await _call(gateway, "POST", "/chat", chat))[0] == 200
    assert openai.last.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_a_registered_provider_without_its_variable_is_not_configured(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path)
    status, created = await _call(
        gateway, "POST", "/providers", {"name": "openai-eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY"}
    )
    assert status == 201
    assert created["data"]["configured"] is False
    assert created["data"]["problem"] == "missing API key: set OPENAI_EU_API_KEY"
    # The type's URL, as the file has it (the seed's body needs nothing else).
    assert gateway.app[STATE].table.providers["openai-eu"].url == "https://api.openai.com/v1"
    chat = {"model": "gpt-4o", "provider": "openai-eu", "messages": [{"role": "user", "content": "hi"}]}
    status, answer = await _call(gateway, "POST", "/chat", chat)
    assert status == 503
    assert _error(answer) == (
        "SERVICE_UNAVAILABLE",
        "provider 'openai-eu' is not configured: missing API key: set OPENAI_EU_API_KEY",
    )
    # Exactly as a file entry without its key answers.
    chat["provider"] = "anthropic"
    status, answer = await _call(gateway, "POST", "/chat", chat)
    assert (status, _error(answer)[0]) == (503, "SERVICE_UNAVAILABLE")
    assert _error(answer)[1] == "provider 'anthropic' is not configured: missing API key: set ANTHROPIC_API_KEY"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/providers", {"name": "openai", "type": "openai", "envVar": "OPENAI_API_KEY"}),
        ("PUT", "/providers/openai", {"defaultModel": "gpt-4o"}),
        ("DELETE", "/providers/openai", None),
        ("DELETE", "/providers/OpenAI", None),
    ],
)
async def test_the_files_entries_are_read_only(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, method: str, path: str, body: Any
) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path)
    before = gateway.app[STATE].table
    status, answer = await _call(gateway, method, path, body)
    assert status == 409
    assert _error(answer) == ("CONFLICT", "provider 'openai' is declared in providers.yaml: it is read-only here")
    assert gateway.app[STATE].table is before


async def test_a_second_registration_of_a_name_is_a_conflict(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path)
    body = {"name": "eu", "type": "openai"}
    status, first = await _call(gateway, "POST", "/providers", body)
    assert status == 201 and first["data"]["envVar"] == "EU_API_KEY"  # the default, as a file entry's
    status, answer = await _call(gateway, "POST", "/providers", {**body, "type": "anthropic"})
    assert status == 409 and _error(answer) == ("CONFLICT", "a provider named 'eu' is already registered")
    status, _ = await _call(gateway, "POST", "/providers", {"name": "eu2", "type": "openai"})
    assert status == 201
    status, answer = await _call(gateway, "PUT", "/providers/eu2", {"name": "eu"})
    assert (status, _error(answer)[0]) == (409, "CONFLICT")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "eu", "type": "openai", "apiKey": "sk-live-123"},
            "'apiKey': keys are never sent to or stored by the gateway;"
            " set envVar to the name of the environment variable that holds the key",
        ),
        (
            {"name": "eu", "type": "openai", "key": "sk-live-123"},
            "'key': keys are never sent to or stored by the gateway;"
            " set envVar to the name of the environment variable that holds the key",
        ),
        (
            {"name": "eu", "type": "openai", "envVar": "sk-live-123"},
            "envVar must be the NAME of an environment variable (upper case letters, digits and _), never a key",
        ),
        (
            {"name": "eu", "type": "openai", "url": "https://user:sk-live-123@api.example.com/v1"},
            "url may not carry credentials (user info or a query): the key comes from envVar",
        ),
        (
            {"name": "eu", "type": "openai", "url": "https://api.example.com/v1?key=sk-live-123"},
            "url may not carry credentials (user info or a query): the key comes from envVar",
        ),
        ({"type": "openai"}, "name is required"),
        ({"name": "eu"}, "type is required"),
        (
            {"name": "EU!", "type": "openai"},
            "name must be lower case: a letter, then letters, digits, - or _ (at most 63)",
        ),
        (
            {"name": "eu", "type": "openai", "colour": "red"},
            "unknown field 'colour'; a provider takes: name, type, defaultModel, envVar, url, endpoints",
        ),
        (
            {"name": "eu", "type": "nosuch"},
            "type 'nosuch' is not a provider of providers.yaml; one of: anthropic, cloudflare, cohere, deepseek,"
            " google, groq, mistral, moonshot, ollama, ollama_cloud, openai",
        ),
        (
            {
                "name": "eu",
                "type": "openai",
                "endpoints": {"chat": {"name": "chat", "method": "FETCH", "endpoint": "/c"}},
            },
            "provider 'eu': providers.eu.endpoints.chat.method: 'FETCH' is not one of"
            " ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']",
        ),
        ([1, 2], "the body must be a JSON object"),
        (b"{nope", "the body is not valid JSON"),
    ],
)
async def test_bad_bodies_are_refused_without_repeating_a_secret(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, body: Any, message: str
) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path)
    status, answer = await _call(gateway, "POST", "/providers", body)
    assert status == 400 and _error(answer) == ("BAD_REQUEST", message)
    assert b"sk-live-123" not in orjson.dumps(answer)
    assert (await _call(gateway, "GET", "/providers/eu"))[0] == 404


async def test_endpoints_override_the_types(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    gateway, openai = await _gateway(aiohttp_client, aiohttp_server, tmp_path, {"EU_API_KEY": EU_KEY})
    moved = {"chat": {"name": "chat_completions", "method": "POST", "endpoint": "/chat/completions"}}
    body = {"name": "eu", "type": "openai", "url": f"{openai.url}/v1", "endpoints": moved}
    status, created = await _call(gateway, "POST", "/providers", body)
    assert status == 201 and created["data"]["endpoints"] == moved
    provider = gateway.app[STATE].table.providers["eu"]
    assert str(provider.endpoints["chat"].url) == f"{openai.url}/v1/chat/completions"
    assert "embeddings" in provider.endpoints  # the type's others are kept
    # A PUT with null clears an override.
    status, updated = await _call(gateway, "PUT", "/providers/eu", {"endpoints": None, "url": None})
    assert status == 200 and updated["data"]["endpoints"] == {} and updated["data"]["url"] is None
    assert gateway.app[STATE].table.providers["eu"].url == "https://api.openai.com/v1"


async def test_with_auth_off_changes_need_the_explicit_setting(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path, registry_write_enable=False)
    refusal = (
        "client auth is off, so anyone could change the provider registry: turn AUTH_ENABLE on (admins may),"
        " or set REGISTRY_WRITE_ENABLE=true to let every caller"
    )
    for method, path, body in (
        ("POST", "/providers", {"name": "eu", "type": "openai"}),
        ("PUT", "/providers/eu", {"defaultModel": "x"}),
        ("DELETE", "/providers/eu", None),
    ):
        status, answer = await _call(gateway, method, path, body)
        assert status == 403 and _error(answer) == ("FORBIDDEN", refusal)
    status, answer = await _call(gateway, "POST", "/models/sync", {"provider": "openai"})
    assert status == 403 and _error(answer)[1].startswith("client auth is off, so anyone could sync model lists")
    # Reads are served.
    assert (await _call(gateway, "GET", "/providers"))[0] == 200


async def test_with_auth_on_only_admins_change_it(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    keys = write_keys(
        tmp_path,
        {"ops": {"admin": True}, "app": {}, "narrow": {"policy": "eu-only"}},
        {"eu-only": {"providers": ["eu"]}},
    )
    admin, plain, narrow = keys.key("ops"), keys.key("app"), keys.key("narrow")
    gateway, _ = await _gateway(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        auth_enable=True,
        auth_keys_file=str(keys.path),
        registry_write_enable=False,
    )
    body = {"name": "eu", "type": "openai"}
    status, answer = await _call(gateway, "POST", "/providers", body)
    assert (status, _error(answer)[0]) == (401, "UNAUTHORIZED")
    status, answer = await _call(gateway, "POST", "/providers", body, key=plain)
    assert status == 403 and _error(answer) == (
        "FORBIDDEN",
        "only an admin key or policy may change the provider registry",
    )
    status, answer = await _call(gateway, "POST", "/models/sync", {"provider": "openai"}, key=plain)
    assert status == 403 and _error(answer) == ("FORBIDDEN", "only an admin key or policy may sync model lists")
    assert (await _call(gateway, "POST", "/providers", body, key=admin))[0] == 201
    # Any client reads.
    status, listed = await _call(gateway, "GET", "/providers/eu", key=plain)
    assert status == 200 and listed["data"]["name"] == "eu"
    # Each client sees the providers its policy lets it use; an admin every one.
    status, listed = await _call(gateway, "GET", "/providers", key=narrow)
    assert status == 200 and [p["name"] for p in listed["data"]] == ["eu"]
    assert (await _call(gateway, "GET", "/providers/eu", key=narrow))[0] == 200
    status, answer = await _call(gateway, "GET", "/providers/openai", key=narrow)
    assert status == 404 and _error(answer) == ("NOT_FOUND", "no provider 'openai'")
    status, listed = await _call(gateway, "GET", "/providers", key=admin)
    assert len(listed["data"]) == len(gateway.app[STATE].file_table.providers) + 1
    status, answer = await _call(gateway, "DELETE", "/providers/eu", key=plain)
    assert (status, _error(answer)[0]) == (403, "FORBIDDEN")
    assert (await _call(gateway, "DELETE", "/providers/eu", key=admin))[0] == 200


async def test_with_the_store_off_the_file_is_listed_and_changes_are_refused(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    openai = await SurfacesProvider().start(aiohttp_server)
    gateway = await start_gateway(
        aiohttp_client, shipped_table({"openai": f"{openai.url}/v1"}), TINY, registry_write_enable=True
    )
    status, listed = await _call(gateway, "GET", "/providers")
    assert status == 200 and {p["source"] for p in listed["data"]} == {"file"}
    status, answer = await _call(gateway, "POST", "/providers", {"name": "eu", "type": "openai"})
    assert status == 404
    assert _error(answer) == (
        "NOT_FOUND",
        "the provider registry is kept in the usage store, which is off: set USAGE_STORE",
    )


# --- model sync --------------------------------------------------------------------------------------------------


async def test_model_sync_stores_the_list_and_models_lists_it(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    gateway, openai = await _gateway(aiohttp_client, aiohttp_server, tmp_path, {"OPENAI_EU_API_KEY": EU_KEY})
    # Never synced: asked live, syncedAt null.
    status, live = await _call(gateway, "GET", "/models?provider=openai")
    assert status == 200
    assert live["data"] == [
        {"id": "plain", "provider": "openai", "ownedBy": "fake", "created": 1, "syncedAt": None},
        {"id": "streamer", "provider": "openai", "ownedBy": "fake", "created": 1, "syncedAt": None},
    ]
    status, synced = await _call(gateway, "POST", "/models/sync", {"provider": "openai"})
    assert status == 200
    data = synced["data"]
    assert data == {
        "provider": "openai",
        "syncedAt": data["syncedAt"],
        "count": 2,
        "models": [
            {"id": "plain", "ownedBy": "fake", "created": 1},
            {"id": "streamer", "ownedBy": "fake", "created": 1},
        ],
    }
    assert openai.last.path == "/v1/models" and openai.last.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    # The provider's list changes; /models shows the stored one, not asking the provider.
    openai.models = ("newer",)
    asked = len(openai.requests)
    status, listed = await _call(gateway, "GET", "/models?provider=openai")
    assert status == 200 and len(openai.requests) == asked
    assert listed["data"] == [
        {"id": "plain", "provider": "openai", "ownedBy": "fake", "created": 1, "syncedAt": data["syncedAt"]},
        {"id": "streamer", "provider": "openai", "ownedBy": "fake", "created": 1, "syncedAt": data["syncedAt"]},
    ]
    status, everyone = await _call(gateway, "GET", "/models")
    assert status == 200 and everyone["data"] == listed["data"]  # openai is the only served provider
    # A provider never synced beside it is asked live.
    registered = {"name": "eu", "type": "openai", "envVar": "OPENAI_EU_API_KEY", "url": f"{openai.url}/v1"}
    assert (await _call(gateway, "POST", "/providers", registered))[0] == 201
    status, everyone = await _call(gateway, "GET", "/models")
    assert status == 200
    assert everyone["data"] == [
        {"id": "newer", "provider": "eu", "ownedBy": "fake", "created": 1, "syncedAt": None},
        *listed["data"],
    ]
    assert openai.last.path == "/v1/models" and openai.last.headers["Authorization"] == f"Bearer {EU_KEY}"
    # A sync replaces the stored list.
    status, again = await _call(gateway, "POST", "/models/sync", {"provider": "openai"})
    assert status == 200 and again["data"]["count"] == 1
    status, listed = await _call(gateway, "GET", "/models?provider=openai")
    assert [m["id"] for m in listed["data"]] == ["newer"]


async def test_model_sync_refusals(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    gateway, _ = await _gateway(aiohttp_client, aiohttp_server, tmp_path)
    cases = [
        ({"provider": "nosuch"}, 404, "NOT_FOUND", "unknown provider 'nosuch'"),
        ({}, 400, "BAD_REQUEST", "provider is required"),
        ({"provider": "openai", "all": True}, 400, "BAD_REQUEST", "unknown field 'all'; a sync takes: provider"),
        (
            {"provider": "anthropic"},
            503,
            "SERVICE_UNAVAILABLE",
            "provider 'anthropic' is not configured: missing API key: set ANTHROPIC_API_KEY",
        ),
    ]
    for body, status, code, message in cases:
        got, answer = await _call(gateway, "POST", "/models/sync", body)
        assert (got, _error(answer)) == (status, (code, message))
