"""Retries: failed connections and 429/502/503/504 before the first byte, jittered backoff, Retry-After honoured
within bounds, never a retry once the client has a byte; the count lands in the Exchange and the log."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import orjson
import pytest
from aiohttp import web

from gateway.upstream.timeouts import RetryPolicy, retry_after
from tests.fakes.bodies import CHAT, chat, event
from tests.fakes.gateways import start_gateway
from tests.fakes.net import read_until_cut
from tests.fakes.providers import Handler, start_provider
from tests.fakes.tables import entry, one_provider, table_of
from tests.fakes.telemetry import captured_logs, events_named, samples

RETRYING = {"max_retries": 3}


def scripted(*answers: tuple[int, dict[str, str]]) -> tuple[list[bytes], Handler]:
    """A provider answering with the given (status, headers) in turn, then 200; it records each body."""
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.read())
        if len(bodies) <= len(answers):
            status, headers = answers[len(bodies) - 1]
            return web.json_response({"error": {"message": f"try {len(bodies)}"}}, status=status, headers=headers)
        return web.json_response({"ok": len(bodies)})

    return bodies, handler


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_a_transient_status_is_retried_with_the_same_body(aiohttp_client, aiohttp_server, status) -> None:
    # A 429 is retried only when the provider says how long to wait (see the test below).
    asked = {"Retry-After": "0"} if status == 429 else {}
    bodies, handler = scripted((status, asked), (status, asked))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    sent = orjson.dumps(chat(temperature=0.5))
    with captured_logs() as logs:
        response = await gw.client.post(CHAT, data=sent, headers={"Content-Type": "application/json"})
        assert response.status == 200
        assert await response.json() == {"ok": 3}
    # The same bytes each time (here with the provider's model name in them).
    assert bodies == [sent.replace(b'"p/m"', b'"m"')] * 3
    exchange = (await gw.settled())[0]
    assert (exchange.retries, exchange.upstream_status) == (2, 200)
    retried = events_named(logs, "retrying upstream call")
    assert [(e["provider"], e["retry"], e["reason"]) for e in retried] == [
        ("p", 1, f"status {status}"),
        ("p", 2, f"status {status}"),
    ]


@pytest.mark.parametrize("status", [400, 401, 404, 500, 501])
async def test_other_statuses_pass_through_at_once(aiohttp_client, aiohttp_server, status) -> None:
    bodies, handler = scripted((status, {"X-Upstream": "1"}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == status
    assert response.headers["X-Upstream"] == "1"
    assert await response.json() == {"error": {"message": "try 1"}}
    assert len(bodies) == 1
    assert (await gw.settled())[0].retries == 0


async def test_out_of_retries_the_last_answer_goes_to_the_client(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted(*[(503, {"X-Try": str(n)}) for n in range(1, 10)])
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries={"max_retries": 2}), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 503
    assert response.headers["X-Try"] == "3"
    # Retried here already: the client's SDK is told not to multiply the calls.
    assert response.headers["x-should-retry"] == "false"
    assert await response.json() == {"error": {"message": "try 3"}}
    assert len(bodies) == 3
    assert (await gw.settled())[0].retries == 2


async def test_retry_after_is_honoured(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted((429, {"Retry-After": "0"}), (503, {"retry-after-ms": "20"}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    with captured_logs() as logs:
        response = await gw.client.post(CHAT, json=chat())
        assert response.status == 200
    assert [e["wait"] for e in events_named(logs, "retrying upstream call")] == [0.0, 0.02]


async def test_a_retry_after_over_the_cap_is_passed_through(aiohttp_client, aiohttp_server) -> None:
    """A provider cannot park a request for an hour: the 429 and its Retry-After go to the client."""
    bodies, handler = scripted((429, {"Retry-After": "3600"}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5000)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 429
    assert response.headers["Retry-After"] == "3600"
    assert len(bodies) == 1


async def test_a_retry_after_beyond_the_remaining_budget_is_passed_through(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted((429, {"Retry-After": "2"}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=1)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert len(bodies) == 1


async def test_retries_off_for_one_provider(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted((503, {}), (503, {}))
    provider = await start_provider(aiohttp_server, handler)
    url = provider.url
    table = table_of(entry("p", url, retries={"max_retries": 0}), entry("q", url))
    gw = await start_gateway(aiohttp_client, table, max_retries=1, client_timeout=5)
    assert (await gw.client.post(CHAT, json=chat("p/m"))).status == 503
    assert len(bodies) == 1
    # The other provider takes the setting: one retry, which succeeds.
    assert (await gw.client.post(CHAT, json=chat("q/m"))).status == 200
    assert len(bodies) == 3


async def test_a_refused_connection_is_retried_then_502(aiohttp_client, unused_tcp_port) -> None:
    table = one_provider(f"http://127.0.0.1:{unused_tcp_port}", retries={"max_retries": 2})
    gw = await start_gateway(aiohttp_client, table, client_timeout=5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"
    exchange = (await gw.settled())[0]
    assert (exchange.retries, exchange.error_type) == (2, "connect")


@pytest.mark.parametrize(("headers", "sends"), [({"Idempotency-Key": "k-1"}, 2), ({}, 1)])
async def test_a_connection_dropped_before_the_head_is_retried_only_when_replayable(
    aiohttp_client, aiohttp_server, headers, sends
) -> None:
    """The provider read the request, then dropped the connection: a POST is sent again only with an idempotency
    key, since the provider may have started the work."""
    seen: list[int] = []

    async def drops_first(request: web.Request) -> web.StreamResponse:
        seen.append(1)
        if len(seen) == 1:
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(1)
        return web.json_response({"ok": True})

    provider = await start_provider(aiohttp_server, drops_first)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat(), headers=headers)
    assert len(seen) == sends
    if sends == 2:
        assert (response.status, await response.json()) == (200, {"ok": True})
        assert (await gw.settled())[0].retries == 1
    else:
        assert response.status == 502
        assert ((await gw.settled())[0].retries, (await gw.settled())[0].error_type) == (0, "connect")


async def test_a_stream_is_retried_before_its_head(aiohttp_client, aiohttp_server) -> None:
    calls: list[int] = []

    async def busy_then_streams(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=503)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(1))
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, busy_then_streams)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await response.read() == event(1)
    assert len(calls) == 2


async def test_nothing_is_retried_once_the_client_has_a_byte(aiohttp_client, aiohttp_server) -> None:
    calls: list[int] = []

    async def breaks_mid_stream(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(1))
        assert request.transport is not None
        request.transport.abort()
        return response

    provider = await start_provider(aiohttp_server, breaks_mid_stream)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await read_until_cut(response) == (event(1), True)
    assert len(calls) == 1
    exchange = (await gw.settled())[0]
    assert (exchange.retries, exchange.error_type) == (0, "truncated")


async def test_the_proxy_route_retries_too(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted((502, {}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post("/proxy/p/anything", data=b"payload")
    assert response.status == 200
    assert bodies == [b"payload", b"payload"]


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff=0.1, backoff_max=1.0)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not a fixed wait
    assert policy.delay(10) is None
    assert RetryPolicy(max_retries=0).delay(0) is None


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    in_a_minute = retry_after({"retry-after": formatdate(timeval=time.time() + 60, usegmt=True)})
    assert in_a_minute is not None and 55 <= in_a_minute <= 60
    policy = RetryPolicy(max_retries=1, retry_after_max=10)
    assert policy.delay(0, {"retry-after": "10"}) == 10.0
    assert policy.delay(0, {"retry-after": "11"}) is None


async def test_retries_show_in_the_access_line_and_a_metric(aiohttp_client, aiohttp_server) -> None:
    bodies, handler = scripted((503, {}), (429, {"Retry-After": "0"}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(
        aiohttp_client,
        one_provider(provider, retries=RETRYING),
        client_timeout=5,
        telemetry_enable=True,
        telemetry_metrics_port=0,
    )
    with captured_logs() as logs:
        assert (await gw.client.post(CHAT, json=chat())).status == 200
        await gw.settled()
    (line,) = events_named(logs, "request")
    assert (line["retries"], line["upstream_status"], line["status"]) == (2, 200, 200)
    metrics = await samples(gw.app)
    assert metrics.value("llmgw_upstream_retries_total", gen_ai_provider_name="p") == 2


async def test_a_429_without_retry_after_goes_to_the_client_at_once(aiohttp_client, aiohttp_server) -> None:
    """Out of quota without saying for how long: asking the same provider again at once would only add to it."""
    bodies, handler = scripted((429, {}))
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider, retries=RETRYING), client_timeout=5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 429
    assert len(bodies) == 1
    assert "x-should-retry" not in response.headers  # not retried here: the client's own rules apply
    assert (await gw.settled())[0].retries == 0


async def test_the_gateways_own_errors_say_whether_a_client_retry_can_help(aiohttp_client, aiohttp_server) -> None:
    table = table_of(entry("p", "http://127.0.0.1:9", retries=RETRYING), entry("keyless", "https://k", "bearer"))
    gw = await start_gateway(aiohttp_client, table, client_timeout=1, connect_timeout=1)
    refused = await gw.client.post(CHAT, json=chat("p/m"))  # nothing listens on port 9: retried, then 502
    assert refused.status == 502
    assert refused.headers["x-should-retry"] == "false"
    assert (await gw.settled())[0].retries > 0
    permanent = [
        await gw.client.post(CHAT, json=chat("keyless/m")),  # 503 provider_not_configured
        await gw.client.post(CHAT, json=chat("nobody-serves-this")),  # 404 no_provider
        await gw.client.post(CHAT, data=b"{", headers={"Content-Type": "application/json"}),  # 400
    ]
    assert [(r.status, r.headers["x-should-retry"]) for r in permanent] == [
        (503, "false"),
        (404, "false"),
        (400, "false"),
    ]
    once = await start_gateway(
        aiohttp_client, table_of(entry("p", "http://127.0.0.1:9", retries={"max_retries": 0})), client_timeout=1
    )
    unretried = await once.client.post(CHAT, json=chat("p/m"))
    assert unretried.status == 502 and "x-should-retry" not in unretried.headers  # the SDK's own rules apply
