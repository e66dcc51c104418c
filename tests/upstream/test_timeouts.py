"""Each time limit, proved against fake providers: connect, response head, whole answer, stream silence; the
table's per-provider overrides; and a stream far longer than every limit that is never cut."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.upstream.timeouts import call_policies
from tests.fakes.bodies import CHAT, chat, event
from tests.fakes.gateways import SHORT, start_gateway
from tests.fakes.net import read_until_cut
from tests.fakes.providers import start_provider
from tests.fakes.tables import entry, one_provider, table_of


async def silent(request: web.Request) -> web.StreamResponse:
    """Accepts the request and never answers (until the gateway hangs up)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port whose accept queue is full: a further connect is never answered, so it can only time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_connect_that_never_completes_is_504_after_the_connect_limit(aiohttp_client) -> None:
    with black_hole() as port:
        table = one_provider(f"http://127.0.0.1:{port}", timeouts={"connect": 0.2, "total": 30})
        gw = await start_gateway(aiohttp_client, table, client_timeout=30, response_header_timeout=30)
        response = await gw.client.post(CHAT, json=chat())
        body = await response.json()
    assert response.status == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert body["error"]["message"] == "the provider could not connect in time"
    assert (await gw.settled())[0].error_type == "timeout"


@pytest.mark.parametrize("stream", [True, False])
async def test_a_provider_that_never_sends_its_head_is_504(aiohttp_client, aiohttp_server, stream) -> None:
    provider = await start_provider(aiohttp_server, silent)
    gw = await start_gateway(aiohttp_client, one_provider(provider), SHORT)
    response = await gw.client.post(CHAT, json=chat(stream=stream))
    assert response.status == 504
    assert (await response.json())["error"] == {
        "message": "the provider did not answer within 0.3s",
        "type": "upstream_error",
        "code": "upstream_timeout",
    }


async def test_the_head_limit_of_a_stream_is_its_own_not_the_whole_limit(aiohttp_client, aiohttp_server) -> None:
    """A stream's head may come after CLIENT_TIMEOUT if CLIENT_RESPONSE_HEADER_TIMEOUT allows it, and vice versa."""

    async def late_head(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(1))
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, late_head)
    slow_head = await start_gateway(aiohttp_client, one_provider(provider), SHORT, response_header_timeout=2)
    ok = await slow_head.client.post(CHAT, json=chat(stream=True))
    assert ok.status == 200
    assert await ok.read() == event(1)
    quick_head = await start_gateway(aiohttp_client, one_provider(provider), SHORT, client_timeout=5)
    cut = await quick_head.client.post(CHAT, json=chat(stream=True))
    assert cut.status == 504


async def test_a_head_wait_longer_than_the_idle_limit_is_not_cut_by_it(aiohttp_client, aiohttp_server) -> None:
    """aiohttp's socket read limit also runs while the head is awaited: it must not shorten the head limit."""

    async def late_head(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.6)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(3):
            await response.write(event(n))
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, late_head)
    table = one_provider(provider, timeouts={"response_header": 3, "stream_idle": 0.2})
    gw = await start_gateway(aiohttp_client, table)
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await response.read() == event(0) + event(1) + event(2)


async def test_a_non_streamed_answer_is_bounded_as_a_whole(aiohttp_client, aiohttp_server) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(100):
            await response.write(b" ")
            await asyncio.sleep(0.05)
        return response

    provider = await start_provider(aiohttp_server, trickle)
    gw = await start_gateway(aiohttp_client, one_provider(provider), client_timeout=0.5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert (await gw.settled())[0].error_type == "timeout"


async def test_a_stream_that_keeps_sending_is_never_cut(aiohttp_client, aiohttp_server) -> None:
    """Thirty events over about 1.5 s, every limit 0.3 s: all arrive, then [DONE], and nothing is reported."""
    events = [event(n) for n in range(30)] + [b"data: [DONE]\n\n"]

    async def long_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for item in events:
            await response.write(item)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    provider = await start_provider(aiohttp_server, long_stream)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    assert await response.read() == b"".join(events)
    exchange = (await gw.settled())[0]
    assert exchange.error_type is None
    assert exchange.bytes_out == len(b"".join(events))


async def test_a_stream_that_goes_silent_is_cut_after_what_arrived(aiohttp_client, aiohttp_server) -> None:
    upstream_released = asyncio.Event()

    async def falls_silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(1))
        await response.write(event(2))
        try:
            await asyncio.Event().wait()
        finally:
            upstream_released.set()
        return response

    provider = await start_provider(aiohttp_server, falls_silent)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 200
    # What arrived, then the connection is cut: a truncated stream never looks whole.
    assert await read_until_cut(response) == (event(1) + event(2), True)
    assert (await gw.settled())[0].error_type == "truncated"
    await asyncio.wait_for(upstream_released.wait(), timeout=5)


async def test_per_provider_overrides_replace_the_settings(aiohttp_client, aiohttp_server) -> None:
    async def slow_answer(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({"ok": True})

    provider = await start_provider(aiohttp_server, slow_answer)
    url = provider.url
    table = table_of(
        entry("local", url, timeouts={"total": "5s"}),
        entry("hosted", url),
    )
    gw = await start_gateway(aiohttp_client, table, SHORT)
    patient = await gw.client.post(CHAT, json=chat("local/m"))
    assert patient.status == 200
    assert await patient.json() == {"ok": True}
    hurried = await gw.client.post(CHAT, json=chat("hosted/m"))
    assert hurried.status == 504


def test_limits_are_precomputed_per_provider_from_settings_and_overrides() -> None:
    table = table_of(
        entry("a", "http://127.0.0.1:1", timeouts={"connect": 1, "response_header": "1m", "stream_idle": "500ms"}),
        entry("b", "http://127.0.0.1:2", retries={"max_retries": 0, "retry_after_max": 3}),
    )
    settings = Settings.from_env(
        {"CLIENT_TIMEOUT": "40s", "CLIENT_CONNECT_TIMEOUT": "7s", "CLIENT_STREAM_IDLE_TIMEOUT": "2m"}
    )
    policies = call_policies(settings, table)
    a, b = policies["a"], policies["b"]
    assert (a.stream.headers, a.stream.whole, a.stream.idle, a.stream.budget) == (60.0, None, 0.5, 40.0)
    assert a.stream.connect == 1.0
    assert (a.chat.headers, a.chat.whole, a.chat.idle) == (40.0, 40.0, None)
    assert (b.stream.headers, b.stream.idle, b.chat.connect) == (10.0, 120.0, 7.0)
    assert (b.retry.max_retries, b.retry.retry_after_max, a.retry.max_retries) == (0, 3.0, 2)
    defaults = call_policies(settings, table_of(entry("c", "http://127.0.0.1:3")))["c"]
    assert (defaults.stream.headers, defaults.stream.idle, defaults.stream.budget) == (10.0, 120.0, 40.0)
    assert (defaults.proxy.headers, defaults.proxy.whole, defaults.proxy.idle) == (40.0, None, 120.0)


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"timeouts": {"connect": 0}}, "providers.p.timeouts.connect"),
        ({"timeouts": {"total": "soon"}}, "providers.p.timeouts.total"),
        ({"timeouts": {"idle": 3}}, "providers.p.timeouts"),
        ({"retries": {"max_retries": -1}}, "providers.p.retries.max_retries"),
        ({"retries": {"max_retries": 1.5}}, "providers.p.retries.max_retries"),
        ({"retries": {"backoff": "0s"}}, "providers.p.retries.backoff"),
    ],
)
def test_bad_overrides_are_rejected_with_their_path(block, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        table_of(entry("p", "http://127.0.0.1:1", **block))
    assert any(text.startswith(problem + ":") for text in caught.value.problems), caught.value.problems


def test_the_settings_read_their_env_names() -> None:
    settings = Settings.from_env(
        {
            "CLIENT_MAX_RETRIES": "5",
            "CLIENT_RETRY_BACKOFF": "100ms",
            "CLIENT_RETRY_BACKOFF_MAX": "2s",
            "CLIENT_RETRY_AFTER_MAX": "1m",
            "PROVIDERS_RELOAD_INTERVAL": "off",
        }
    )
    assert (settings.max_retries, settings.retry_backoff, settings.retry_backoff_max) == (5, 0.1, 2.0)
    assert (settings.retry_after_max, settings.reload_interval) == (60.0, 0.0)
    assert Settings.from_env({}).reload_interval == 2.0
    with pytest.raises(ConfigError):
        Settings.from_env({"CLIENT_MAX_RETRIES": "-1"})


async def test_model_lists_use_each_providers_head_limit(aiohttp_client, aiohttp_server) -> None:
    async def slow_list(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({"object": "list", "data": [{"id": "m1", "object": "model", "created": 1}]})

    provider = await start_provider(aiohttp_server, slow_list)
    url = provider.url
    table = table_of(entry("local", url, timeouts={"response_header": 5}), entry("hosted", url))
    gw = await start_gateway(aiohttp_client, table, SHORT)
    listing = await (await gw.client.get("/v1/models")).json()
    # The hosted provider's list took longer than the default 0.3 s and is left out; the local one waited.
    assert [model["id"] for model in listing["data"]] == ["local/m1"]
    assert (await gw.client.get("/v1/models?provider=local")).status == 200
    assert (await gw.client.get("/v1/models?provider=hosted")).status == 504
