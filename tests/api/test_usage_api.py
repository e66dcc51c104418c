"""The usage API against a gateway with known traffic, on a real SQLite store: the figures, the rows, one
request's record, CSV, who sees what (auth off, clients, admins), and bad parameters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config.settings import Settings
from tests.fakes.access import write_keys
from tests.fakes.bodies import chat
from tests.fakes.gateways import Gateway, start_gateway
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import usage_table
from tests.fakes.usage import store_ready, written


def usage_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "usage_store": str(tmp_path / "usage.db"),
        "usage_api_enable": True,
        "usage_flush_interval": 0.02,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def upstream(aiohttp_server: Any) -> ChatProvider:
    return await ChatProvider().start(aiohttp_server)


async def traffic(gateway: Gateway, headers: dict[str, str] | None = None) -> list[str]:
    """Two plain chats (11 in, 7 out), one streamed through the group (5 in, 3 out), one failing (500): their ids."""
    ids = []
    bodies = [
        chat("fake/plain", metadata={"source": "external-client"}, user="u-1"),
        chat("fake/plain"),
        chat("grouped", stream=True),
        chat("fake/fail"),
    ]
    for body in bodies:
        response = await gateway.client.post("/v1/chat/completions", json=body, headers=headers or {})
        await response.read()
        ids.append(response.headers["X-Request-ID"])
    return ids


async def test_the_summary_buckets_and_rows_of_known_traffic(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    ids = await traffic(gateway)
    await written(gateway.app, 4)
    response = await gateway.client.get("/v1/usage", params={"group_by": "model", "include": "requests"})
    assert response.status == 200
    body = await response.json()
    summary = body["summary"]
    assert {k: summary[k] for k in ("requests", "errors", "input_tokens", "output_tokens", "total_tokens")} == {
        "requests": 4,
        "errors": 1,
        "input_tokens": 27,
        "output_tokens": 17,
        "total_tokens": 44,
    }
    # plain: 2 x (11 x $1 + 7 x $2) per million; the group's streamer: 5 x $10 + 3 x $20 per million.
    assert summary["cost"] == pytest.approx(2 * 25e-6 + 110e-6)
    assert [(b["key"], b["requests"], b["errors"]) for b in body["buckets"]] == [
        ("plain", 2, 0),
        ("fail", 1, 1),
        ("streamer", 1, 0),
    ]
    rows = {r["request_id"]: r for r in body["requests"]}
    assert list(rows) == list(reversed(ids))
    first, streamed, failed = rows[ids[0]], rows[ids[2]], rows[ids[3]]
    assert first["metadata"] == {"source": "external-client"} and first["end_user"] == "u-1"
    assert (first["provider"], first["model"], first["status"], first["stream"]) == ("fake", "plain", 200, False)
    assert first["input_tokens"] == 11 and first["output_tokens"] == 7 and first["cost"] == pytest.approx(25e-6)
    assert streamed["stream"] is True and streamed["model_requested"] == "grouped" and streamed["model"] == "streamer"
    # Routing says which group served it and how (the group's default strategy; no deployment passed over).
    assert (streamed["model_group"], streamed["strategy"], streamed["fallbacks"]) == ("grouped", "fallback", 0)
    assert streamed["ttft_ms"] is not None and streamed["ttft_ms"] <= streamed["duration_ms"]
    assert failed["status"] == 500 and failed["cost"] is None and failed["input_tokens"] is None
    assert body["next_cursor"] is None


async def test_one_request_by_the_id_the_client_got(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    response = await gateway.client.post(
        "/v1/chat/completions", json=chat("fake/plain", user="u-9"), headers={"X-Request-ID": "my-request-1"}
    )
    assert response.status == 200
    await written(gateway.app, 1)
    record = await gateway.client.get("/v1/requests/my-request-1")
    assert record.status == 200
    found = await record.json()
    assert (found["request_id"], found["end_user"], found["route"], found["operation"]) == (
        "my-request-1",
        "u-9",
        "/v1/chat/completions",
        "chat",
    )
    assert found["request_body"] is None and found["response_body"] is None  # bodies are opt-in
    missing = await gateway.client.get("/v1/requests/nobody")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


async def test_probes_and_the_usage_api_itself_leave_no_rows(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    for path in ("/health", "/v1/usage", "/usage", "/nowhere"):
        await (await gateway.client.get(path)).read()
    await (await gateway.client.post("/v1/chat/completions", json=chat("fake/plain"))).read()
    await written(gateway.app, 1)
    await asyncio.sleep(0.1)
    body = await (await gateway.client.get("/v1/usage")).json()
    assert body["summary"]["requests"] == 1


async def test_csv_export(aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    ids = await traffic(gateway)
    await written(gateway.app, 4)
    response = await gateway.client.get("/v1/usage/export", params={"model": "plain"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = (await response.text()).split("\r\n")
    assert lines[0].startswith("time,request_id,client,route,operation,provider,model_requested,model,")
    assert lines[-1] == ""
    assert [line.split(",")[1] for line in lines[1:-1]] == [ids[1], ids[0]]
    assert lines[2].endswith(',u-1,"{""source"":""external-client""}"')
    # Paged inside: a limit smaller than the rows, read across pages of the store.
    two = await gateway.client.get("/v1/usage/export", params={"limit": "3"})
    assert len((await two.text()).split("\r\n")) == 1 + 3 + 1


async def test_bodies_are_stored_only_when_asked_truncated_and_redacted(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(
        aiohttp_client,
        usage_table(upstream.url),
        usage_settings(tmp_path, usage_store_bodies=True, debug_content_truncate_words=2),
    )
    key = "gwk_0123456789ab_" + "s" * 43
    body = chat("fake/plain", metadata={"token": "hunter22-secret", "note": f"my key {key}"})
    body["messages"] = [{"role": "user", "content": "one two three four"}]
    response = await gateway.client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "with-body"})
    await response.read()
    await written(gateway.app, 1)
    found = await (await gateway.client.get("/v1/requests/with-body")).json()
    assert found["request_body"]["messages"] == [{"role": "user", "content": "one two ..."}]
    assert found["metadata"] == {"token": "[REDACTED]", "note": "my key gwk_0123456789ab_[REDACTED]"}
    assert found["request_body"]["metadata"] == found["metadata"]
    assert found["response_body"]["choices"][0]["message"]["content"] == "one two ..."
    assert found["response_body"]["usage"]["prompt_tokens"] == 11


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "week"}, "group_by: 'week' is not one of hour, day, model, provider, client"),
        ({"since": "yesterday"}, "since: 'yesterday' is neither an ISO 8601 date or time nor epoch seconds"),
        ({"since": "2027-01-02", "until": "2027-01-01"}, "since must be before until"),
        ({"limit": "0"}, "limit: must be between 1 and 1000"),
        ({"include": "bodies"}, "include: only `requests` can be included"),
        ({"since": "0", "group_by": "hour"}, "more than 1000 buckets"),
        ({"include": "requests", "cursor": "x"}, "cursor: not a cursor this API gave"),
    ],
)
async def test_bad_parameters_are_400_in_the_openai_envelope(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path, params: dict[str, str], message: str
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    await store_ready(gateway.app)  # the store opens in the background
    response = await gateway.client.get("/v1/usage", params=params)
    assert response.status == 400
    error = (await response.json())["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


async def test_iso_and_epoch_times_select_the_same_range(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    await traffic(gateway)
    await written(gateway.app, 4)
    iso = await (
        await gateway.client.get("/v1/usage", params={"since": "2020-01-01", "until": "2100-01-01T00:00Z"})
    ).json()
    epoch = await (await gateway.client.get("/v1/usage", params={"since": "1577836800", "until": "4102444800"})).json()
    assert iso["summary"] == epoch["summary"] and iso["summary"]["requests"] == 4
    assert (iso["since"], iso["until"]) == ("2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    future = await (await gateway.client.get("/v1/usage", params={"since": "2099-01-01"})).json()
    assert "since must be before until" in orjson.dumps(future).decode()


async def test_with_auth_off_the_api_is_off_unless_enabled(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    gateway = await start_gateway(
        aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path, usage_api_enable=False)
    )
    for path in ("/v1/usage", "/v1/usage/export", "/v1/requests/x"):
        response = await gateway.client.get(path)
        assert response.status == 404
        assert "USAGE_API_ENABLE=true" in (await response.json())["error"]["message"]


async def test_with_the_store_off_the_api_says_so(aiohttp_client: Any, upstream: ChatProvider) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), Settings(usage_api_enable=True))
    response = await gateway.client.get("/v1/usage")
    assert response.status == 404
    assert "set USAGE_STORE" in (await response.json())["error"]["message"]


async def test_with_auth_on_a_client_sees_its_own_rows_and_an_admin_everyones(
    aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path
) -> None:
    keys = write_keys(
        tmp_path,
        {"alice": {}, "bob": {}, "boss": {"policy": "admins"}, "ops": {"admin": True}},
        {"admins": {"admin": True}},
    )
    settings = usage_settings(tmp_path, usage_api_enable=False, auth_enable=True, auth_keys_file=str(keys.path))
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), settings)

    def bearer(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys.key(name)}"}

    alice_ids = await traffic(gateway, bearer("alice"))
    bob = await gateway.client.post("/v1/chat/completions", json=chat("fake/plain"), headers=bearer("bob"))
    await bob.read()
    bob_id = bob.headers["X-Request-ID"]
    await written(gateway.app, 5)

    async def seen(name: str, **params: str) -> dict[str, Any]:
        response = await gateway.client.get("/v1/usage", params=params, headers=bearer(name))
        assert response.status == 200
        return dict(await response.json())

    assert (await seen("alice"))["summary"]["requests"] == 4
    # Asking for another client's rows gives one's own.
    alice_as_bob = await seen("alice", client="bob", group_by="client")
    assert alice_as_bob["summary"]["requests"] == 4 and alice_as_bob["filters"]["client"] == "alice"
    assert [b["key"] for b in alice_as_bob["buckets"]] == ["alice"]
    assert (await seen("bob"))["summary"]["requests"] == 1
    for admin in ("boss", "ops"):
        everyone = await seen(admin, group_by="client")
        assert [(b["key"], b["requests"]) for b in everyone["buckets"]] == [("alice", 4), ("bob", 1)]
        assert (await seen(admin, client="bob"))["summary"]["requests"] == 1
    not_hers = await gateway.client.get(f"/v1/requests/{bob_id}", headers=bearer("alice"))
    assert not_hers.status == 404
    own = await gateway.client.get(f"/v1/requests/{alice_ids[0]}", headers=bearer("alice"))
    assert own.status == 200 and (await own.json())["client"] == "alice"
    assert (await gateway.client.get(f"/v1/requests/{bob_id}", headers=bearer("ops"))).status == 200
    anonymous = await gateway.client.get("/v1/usage")
    assert anonymous.status == 401
    # The page itself is public: it asks for a key and reads the API with it.
    assert (await gateway.client.get("/usage")).status == 200


async def test_the_inference_api_shape_of_seed_001(aiohttp_client: Any, upstream: ChatProvider, tmp_path: Path) -> None:
    gateway = await start_gateway(aiohttp_client, usage_table(upstream.url), usage_settings(tmp_path))
    ids = await traffic(gateway)
    await written(gateway.app, 4)
    response = await gateway.client.get(
        "/api/v1/inference/usage", params={"since": "2020-01-01", "provider": "fake", "limit": "2"}
    )
    assert response.status == 200
    body = await response.json()
    assert body["success"] is True
    summary = body["data"]["summary"]
    assert {k: v for k, v in summary.items() if k not in ("avgDurationMs", "totalCost")} == {
        "totalRequests": 4,
        "totalErrors": 1,
        "totalInputTokens": 27,
        "totalOutputTokens": 17,
        "totalTokens": 44,
    }
    assert isinstance(summary["avgDurationMs"], int)
    newest = body["data"]["requests"]
    assert [r["id"] for r in newest] == [ids[3], ids[2]]
    assert newest[1]["modelRequested"] == "grouped" and newest[1]["inputTokens"] == 5 and newest[1]["stream"] is True
    one = await (await gateway.client.get(f"/api/v1/inference/requests/{ids[0]}")).json()
    assert one["success"] is True and one["data"]["metadata"] == {"source": "external-client"}
    assert one["data"]["user"] == "u-1" and one["data"]["createdAt"].endswith("Z")
    missing = await gateway.client.get("/api/v1/inference/requests/nobody")
    assert missing.status == 404
    assert await missing.json() == {
        "success": False,
        "error": {"code": "NOT_FOUND", "message": "no usage record for request id 'nobody'"},
    }
    bad = await gateway.client.get("/api/v1/inference/usage", params={"since": "soon"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "BAD_REQUEST"
