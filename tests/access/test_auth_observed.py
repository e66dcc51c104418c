"""Where access control meets observability: client 401s are counted, the client's name (never its key) is a
metric label and an access-log field, and no key appears in any log line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import structlog

from tests.fakes.access import write_keys
from tests.fakes.bodies import chat
from tests.fakes.gateways import auth_settings, gateway_app
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import access_table
from tests.fakes.telemetry import Samples, scrape

ROUTE = "/v1/chat/completions"


async def test_client_names_and_401s_are_measured_and_logged(
    tmp_path: Path, upstream: ChatProvider, aiohttp_client: Any
) -> None:
    keys = write_keys(tmp_path, {"team-a": {}})
    settings = auth_settings(
        auth_keys_file=str(keys.path), telemetry_enable=True, telemetry_metrics_port=0, host="127.0.0.1"
    )
    app = gateway_app(settings, access_table(upstream.url))
    client = await aiohttp_client(app)
    key = keys.key("team-a")
    with structlog.testing.capture_logs() as logs:
        async with client.post(ROUTE, data=orjson.dumps(chat("fake/alpha-1"))) as response:
            assert response.status == 401
        async with client.post(
            ROUTE, data=orjson.dumps(chat("fake/alpha-1")), headers={"X-API-Key": "gwk_wrong"}
        ) as response:
            assert response.status == 401
        async with client.post(ROUTE, data=orjson.dumps(chat("fake/alpha-1")), headers={"X-API-Key": key}) as response:
            assert response.status == 200
            await response.read()
        stream = orjson.dumps(chat("fake/alpha-1", stream=True))
        async with client.post(ROUTE, data=stream, headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
            await response.read()

    samples = Samples.parse(await scrape(app))
    assert samples.value("llmgw_http_requests_total", route=ROUTE, method="POST", status="401") == 2
    assert samples.value("llmgw_http_requests_total", route=ROUTE, method="POST", status="200") == 2
    assert samples.value("llmgw_client_requests_total", client="team-a", status="200") == 2
    assert samples.value("llmgw_client_tokens_total", client="team-a", gen_ai_token_type="input") == 14
    assert samples.value("llmgw_client_tokens_total", client="team-a", gen_ai_token_type="output") == 10
    access = [line for line in logs if line["event"] == "request"]
    assert [(line["status"], line["client"]) for line in access] == [
        (401, None),
        (401, None),
        (200, "team-a"),
        (200, "team-a"),
    ]
    assert key not in repr(logs) and key.split("_", 2)[2] not in repr(logs)
