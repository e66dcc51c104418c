"""Streaming is passthrough: bytes as the provider sent them, each as it arrives, closed with the client."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.fakes.bodies import CHAT, chat
from tests.fakes.net import read_until_cut
from tests.fakes.providers import sending
from tests.fakes.tables import entry

EVENTS = [
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    # an event split across writes, odd whitespace and a comment line: all must arrive as sent
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"con',
    b'tent":"lo \\u00e9"}}]}\n\n: keep-alive\n\n',
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n',
    b"data: [DONE]\n\n",
]


async def sse_upstream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Upstream": "yes"})
    await response.prepare(request)
    for event in EVENTS:
        await response.write(event)
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def test_the_stream_arrives_byte_for_byte(gateway, fake_provider) -> None:
    fake = await fake_provider({"/chat/completions": sse_upstream})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await response.read() == b"".join(EVENTS)
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["X-Upstream"] == "yes"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers


async def test_the_first_chunk_reaches_the_client_while_the_upstream_still_holds_the_stream(
    gateway, fake_provider
) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(EVENTS[0])
        await release.wait()  # nothing more until the client has seen the first event
        await response.write(EVENTS[-1])
        await response.write_eof()
        finished.set()
        return response

    fake = await fake_provider({"/chat/completions": held})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat(stream=True))
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    assert first == EVENTS[0]
    assert not finished.is_set()
    release.set()
    assert await asyncio.wait_for(response.content.read(), timeout=5) == EVENTS[-1]


async def test_a_client_that_disconnects_closes_the_upstream_request(gateway, fake_provider) -> None:
    upstream_closed = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(EVENTS[0])
        try:
            # Silent after the first event, like a model thinking: only the gateway closing the
            # connection ends this (the test server cancels the handler when its peer goes away).
            await asyncio.sleep(60)
        finally:
            upstream_closed.set()
        return response

    fake = await fake_provider({"/chat/completions": endless})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat(stream=True))
    assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5) == EVENTS[0]
    response.close()  # the client goes away mid-stream
    await asyncio.wait_for(upstream_closed.wait(), timeout=5)


async def test_a_stream_cut_by_the_provider_is_cut_after_what_arrived(gateway, fake_provider) -> None:
    # Reset mid-line, no [DONE].
    fake = await fake_provider({"/chat/completions": sending(EVENTS[0] + EVENTS[1][:20], then="reset")})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await read_until_cut(response) == (EVENTS[0] + EVENTS[1][:20], True)


async def test_compressed_bytes_are_never_requested_for_a_stream(gateway, fake_provider) -> None:
    fake = await fake_provider({"/chat/completions": sse_upstream})
    client = await gateway(entry("p", fake.url))
    response = await client.post(CHAT, json=chat(stream=True), headers={"Accept-Encoding": "gzip, br"})
    await response.read()
    assert fake.last.headers["Accept-Encoding"] == "identity"
