"""An answer the provider cuts short is cut for the client too: no terminating chunk, no clean close, so no client
takes a truncated answer for a whole one (as Go's ReverseProxy does). It is counted and logged."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import start_gateway
from tests.fakes.net import read_until_cut
from tests.fakes.providers import sending, start_provider
from tests.fakes.tables import one_provider
from tests.fakes.telemetry import captured_logs, events_named

PART = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assis'


async def sized_then_reset(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 10 * len(PART)
    await response.prepare(request)
    await response.write(PART)
    assert request.transport is not None
    request.transport.abort()
    return response


@pytest.mark.parametrize(
    "handler",
    [sending(PART, content_type="application/json", then="reset"), sized_then_reset],
    ids=["chunked", "content-length"],
)
async def test_a_non_streamed_answer_cut_short_is_cut_for_the_client(aiohttp_client, aiohttp_server, handler):
    provider = await start_provider(aiohttp_server, handler)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    with captured_logs() as logs:
        response = await gw.client.post(CHAT, json=chat())
        assert response.status == 200
        assert await read_until_cut(response) == (PART, True)
        exchange = (await gw.settled())[0]
    assert (exchange.error_type, exchange.bytes_out) == ("truncated", len(PART))
    assert events_named(logs, "upstream body ended early")
