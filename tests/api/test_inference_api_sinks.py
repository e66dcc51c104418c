"""The Inference API's requests reach the same sinks as any other: the GenAI and HTTP metrics (by its route
patterns), the access line, and the client's token budget, all from the usage the provider's own answer reported."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from tests.fakes.access import write_keys
from tests.fakes.gateways import auth_settings, start_gateway, telemetry_settings
from tests.fakes.providers import SurfacesProvider
from tests.fakes.tables import shipped_table
from tests.fakes.telemetry import captured_logs, events_named, samples

API = "/api/v1/inference"
HI = [{"role": "user", "content": "hi"}]


async def test_metrics_and_the_access_line(aiohttp_client: Any, aiohttp_server: Any) -> None:
    fake = await SurfacesProvider().start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, shipped_table({"openai": f"{fake.url}/v1"}), telemetry_settings())
    with captured_logs() as logs:
        plain = await gw.client.post(f"{API}/chat", json={"model": "gpt-4o", "messages": HI})
        assert plain.status == 200
        streamed = await gw.client.post(f"{API}/chat/stream", json={"model": "gpt-4o", "messages": HI})
        await streamed.read()
        refused = await gw.client.post(f"{API}/chat", json={"messages": HI})
        assert refused.status == 400
        await gw.settled(3)
    found = await samples(gw.app)
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
    sums = {
        kind: sum(v for _, v in found.matching("gen_ai_client_token_usage_sum", gen_ai_token_type=kind, **labels))
        for kind in ("input", "output")
    }
    assert sums == {"input": 11 + 5, "output": 7 + 3}  # the plain answer's usage, then the stream's usage chunk
    route = {"method": "POST"}
    assert found.value("llmgw_http_requests_total", route=f"{API}/chat", status="200", **route) == 1
    assert found.value("llmgw_http_requests_total", route=f"{API}/chat/stream", status="200", **route) == 1
    assert found.value("llmgw_http_requests_total", route=f"{API}/chat", status="400", **route) == 1
    lines = events_named(logs, "request")
    assert [(line["route"], line["status"], line["input_tokens"], line["output_tokens"]) for line in lines] == [
        (f"{API}/chat", 200, 11, 7),
        (f"{API}/chat/stream", 200, 5, 3),
        (f"{API}/chat", 400, None, None),
    ]


async def test_the_token_budget_is_charged_what_the_provider_reported(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    fake = await SurfacesProvider().start(aiohttp_server)
    keys = write_keys(tmp_path, {"tpm": {"policy": "tpm"}}, {"tpm": {"tokens_per_minute": 1000}})
    settings = auth_settings(auth_keys_file=str(keys.path))
    gw = await start_gateway(aiohttp_client, shipped_table({"openai": f"{fake.url}/v1"}), settings)
    headers = {"Authorization": f"Bearer {keys.key('tpm')}"}
    body = {"model": "gpt-4o", "messages": HI, "maxTokens": 1}
    first = await gw.client.post(f"{API}/chat", json=body, headers=headers)
    assert first.status == 200
    await gw.settled(1)
    second = await gw.client.post(f"{API}/chat", json=body, headers=headers)
    # The first answer's 11 + 7 tokens are spent; the second request holds its own estimate (the translated body's
    # bytes / 4, and its maxTokens) while it runs.
    sent = orjson.dumps({"model": "gpt-4o", "messages": HI, "max_tokens": 1})
    assert fake.last.body == sent
    held = math.ceil(len(sent) / 4) + 1
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 18 - held)
