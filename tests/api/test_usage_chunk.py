"""The usage chunk the gateway asks for on a client's behalf (`stream_usage: true` providers, no
`stream_options` from the client) is read for accounting and never relayed: the client receives exactly what the
provider would have sent it. A client that asked for usage itself gets the chunk byte for byte."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes.bodies import CHAT, DONE, chat, chunk
from tests.fakes.gateways import start_gateway
from tests.fakes.providers import sending, start_provider
from tests.fakes.tables import one_provider

USAGE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n'
)
FIRST, LAST = chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}, "stop")


@pytest.mark.parametrize(
    "parts",
    [
        [FIRST, LAST, USAGE, DONE],
        # The usage event split over reads, and sharing a read with the events around it.
        [FIRST, LAST + USAGE[:40], USAGE[40:90], USAGE[90:] + DONE],
        [FIRST + LAST + USAGE + DONE],
    ],
    ids=["separate", "split", "one-read"],
)
async def test_the_usage_chunk_the_gateway_asked_for_is_read_not_relayed(aiohttp_client, aiohttp_server, parts):
    provider = await start_provider(aiohttp_server, sending(*parts))
    gw = await start_gateway(aiohttp_client, one_provider(provider, stream_usage=True))
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await response.read() == FIRST + LAST + DONE
    # The provider was asked for usage, and the gateway read it.
    assert orjson.loads(provider.last.body)["stream_options"] == {"include_usage": True}
    exchange = (await gw.settled())[0]
    assert exchange.usage_requested
    assert exchange.scanner is not None and exchange.scanner.usage == (5, 3, 0)
    assert exchange.bytes_out == len(FIRST + LAST + DONE)


async def test_a_client_that_asked_for_usage_gets_the_chunk_byte_for_byte(aiohttp_client, aiohttp_server) -> None:
    provider = await start_provider(aiohttp_server, sending(FIRST, LAST, USAGE, DONE))
    gw = await start_gateway(aiohttp_client, one_provider(provider, stream_usage=True))
    body = chat(stream=True, stream_options={"include_usage": True})
    response = await gw.client.post(CHAT, json=body)
    assert await response.read() == FIRST + LAST + USAGE + DONE
    assert not (await gw.settled())[0].usage_requested
