"""Hostile and broken input from both sides: each gets a clear error or a clean close, never a hang or a crash,
and the gateway lets go of every connection and task it held."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from aiohttp import web

from gateway.upstream.call import TRANSPORT
from tests.fakes.bodies import CHAT, chat, event
from tests.fakes.gateways import start_gateway
from tests.fakes.net import raw_connection, read_until_cut, status_of, wait_for
from tests.fakes.providers import answering, sending, start_provider
from tests.fakes.tables import one_provider
from tests.fakes.telemetry import captured_logs

LIMIT = 64 * 1024


def post_head(length: int | None = None, extra: bytes = b"") -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + framing
        + extra
        + b"\r\n"
    )


@pytest.fixture
async def gw(aiohttp_client, aiohttp_server):
    provider = await start_provider(aiohttp_server, answering({"ok": True}))
    return await start_gateway(aiohttp_client, one_provider(provider), max_request_body_size=LIMIT, read_timeout=0.3)


def no_unhandled(logs: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


# ---- clients ---------------------------------------------------------------------------------------------------


async def test_an_announced_oversized_body_gets_413_before_any_of_it_is_sent(gw) -> None:
    async with raw_connection(gw.port) as raw:
        await raw.send(post_head(length=50 * 1024 * 1024))
        answer = await raw.answer()
    assert status_of(answer) == 413
    assert b'"code":"request_too_large"' in answer


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(gw) -> None:
    """No Content-Length: the body is read only up to the limit, then 413, while the client is still sending."""
    async with raw_connection(gw.port) as raw:
        await raw.send(post_head())
        piece = b"x" * 4096
        for _ in range(LIMIT // len(piece) + 1):
            await raw.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        # The body never ends (no terminating chunk): the answer can only come from the limit.
        answer = await raw.answer()
    assert status_of(answer) == 413
    assert b"Connection: close" in answer


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[" * 20_000 + b"]" * 20_000, "invalid_json"),
        (b'{"model": 7, "messages": []}', "invalid_model"),
        (b'{"model": "p/m", "messages": "hi"}', "invalid_messages"),
        (b'{"model": "p/m", "messages": [1]}', "invalid_messages"),
        (b'{"model": "p/m", "messages": [{}], "stream": "yes"}', "invalid_stream"),
        (b'{"model": "p/m", "messages": [{}], "provider": 3}', "invalid_provider"),
    ],
)
async def test_malformed_bodies_get_a_clear_400(gw, body, code) -> None:
    response = await gw.client.post(CHAT, data=body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code


async def test_deep_but_valid_nesting_is_relayed(gw) -> None:
    nested: object = "deep"
    for _ in range(200):
        nested = [nested]
    response = await gw.client.post(CHAT, json=chat(metadata=nested))
    assert response.status == 200


@pytest.mark.parametrize(
    "header",
    [
        b"X-Big: " + b"a" * 100_000 + b"\r\n",
        b"".join(b"X-Many-%d: v\r\n" % n for n in range(500)) + b"X-Huge: " + b"b" * 9000 + b"\r\n",
        b"X-Bad: one\rtwo\r\n",
        b"X-Bad: one\x00two\r\n",
        b"Bad Name: v\r\n",
    ],
)
async def test_huge_or_broken_headers_get_400_and_a_closed_connection(gw, header, caplog) -> None:
    async with raw_connection(gw.port) as raw:
        await raw.send(post_head(length=2, extra=header) + b"{}")
        answer = await raw.response()
    assert status_of(answer) == 400
    assert gw.exchanges == []  # refused by the HTTP parser: no handler ran
    # One warning line, no traceback: a hostile client cannot fill the logs with stack traces.
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage().startswith("refused a malformed request from 127.0.0.1: ")


async def test_a_slow_sender_gets_408(gw) -> None:
    async with raw_connection(gw.port) as raw:
        await raw.send(post_head(length=100) + b'{"model":')
        answer = await raw.answer()
    assert status_of(answer) == 408
    assert b'"code":"request_timeout"' in answer


async def test_a_client_that_never_finishes_its_headers_is_closed(aiohttp_client, aiohttp_server) -> None:
    """Slowloris: server.py hands SERVER_IDLE_TIMEOUT to aiohttp as keepalive_timeout, which also closes a
    connection whose request head never completes, however slowly it trickles in."""
    provider = await start_provider(aiohttp_server, answering({"ok": True}))
    gw = await start_gateway(aiohttp_client, one_provider(provider), server_kwargs={"keepalive_timeout": 0.3})
    async with raw_connection(gw.port) as raw:
        await raw.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
        for n in range(200):
            await asyncio.sleep(0.02)
            if raw.reader.at_eof() or raw.writer.is_closing():
                break
            try:
                await raw.send(b"X-Slow-%d: v\r\n" % n)
            except ConnectionError:
                break
        assert await raw.response() == b""  # closed, without an answer to a request that never was
    assert gw.exchanges == []


@pytest.mark.parametrize(
    "framing",
    [
        b"zz\r\nbody\r\n0\r\n\r\n",  # not a chunk size
        b"4\r\nbodyEXTRA\r\n0\r\n\r\n",  # a chunk longer than announced
    ],
)
@pytest.mark.parametrize(("late", "status"), [(False, 400), (True, 408)])
async def test_broken_chunked_framing_gets_a_clear_error(gw, framing, late, status, caplog) -> None:
    """With the head, the HTTP parser refuses it (400); after the handler started reading, the body can never
    complete and the read limit answers (408). Either way: no error logged, connection closed."""
    with captured_logs() as logs:
        async with raw_connection(gw.port) as raw:
            if late:
                await raw.send(post_head() + b'4\r\n{"mo\r\n')
                await gw_reading(gw)
                await raw.send(framing)
                answer = await raw.answer()  # aiohttp then lingers a while before it closes
            else:
                await raw.send(post_head() + framing)
                answer = await raw.response()  # and the connection closes
    assert status_of(answer) == status
    no_unhandled(logs, caplog)


async def gw_reading(gw) -> None:
    """Give the gateway time to start reading the body (the handler runs once the head is parsed)."""
    await asyncio.sleep(0.05)


async def test_a_client_that_vanishes_mid_body_leaves_nothing_behind(gw, caplog) -> None:
    assert (await gw.client.post(CHAT, json=chat())).status == 200  # the test client's keep-alive task exists
    baseline = len(asyncio.all_tasks())
    with captured_logs() as logs:
        async with raw_connection(gw.port) as raw:
            await raw.send(post_head(length=1000) + b'{"model": "p/m", "mess')
        await gw.settled(2)
        # the gateway still serves
        assert (await gw.client.post(CHAT, json=chat())).status == 200
    await wait_for(lambda: len(asyncio.all_tasks()) <= baseline)
    no_unhandled(logs, caplog)


async def test_a_client_that_vanishes_mid_stream_releases_the_upstream(aiohttp_client, aiohttp_server) -> None:
    upstream_gone = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for n in range(10_000):
                await response.write(event(n))
                await asyncio.sleep(0.01)
        finally:
            upstream_gone.set()
        return response

    provider = await start_provider(aiohttp_server, endless)
    gw = await start_gateway(aiohttp_client, one_provider(provider), stream_idle_timeout=30, write_timeout=30)
    async with raw_connection(gw.port) as raw:
        body = orjson.dumps(chat(stream=True))
        await raw.send(post_head(length=len(body)) + body)
        assert (await raw.head()).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(upstream_gone.wait(), timeout=5)
    exchange = (await gw.settled())[0]
    assert exchange.client_disconnected
    pool = gw.app[TRANSPORT].pool  # type: ignore[attr-defined]
    await wait_for(lambda: pool.open_connections == pool.idle_connections)  # none is held for it any more


async def test_a_client_that_stops_reading_is_cut_after_the_write_limit(aiohttp_client, aiohttp_server) -> None:
    """SERVER_WRITE_TIMEOUT: the client takes no more bytes; the exchange ends and the upstream is let go."""
    upstream_gone = asyncio.Event()
    chunk = b"data: " + b"x" * 65536 + b"\n\n"

    async def firehose(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(100_000):
                await response.write(chunk)
        finally:
            upstream_gone.set()
        return response

    provider = await start_provider(aiohttp_server, firehose)
    gw = await start_gateway(aiohttp_client, one_provider(provider), stream_idle_timeout=30, write_timeout=0.3)
    async with raw_connection(gw.port, receive_buffer=4096) as raw:
        body = orjson.dumps(chat(stream=True))
        await raw.send(post_head(length=len(body)) + body)
        assert (await raw.head()).startswith(b"HTTP/1.1 200")
        # ...and never read again, while keeping the connection open.
        await asyncio.wait_for(upstream_gone.wait(), timeout=10)
    exchange = (await gw.settled())[0]
    assert exchange.error_type == "write_timeout"


async def test_a_slow_reader_that_keeps_reading_is_not_cut(aiohttp_client, aiohttp_server) -> None:
    chunks = [b"data: " + bytes([65 + n % 26]) * 65536 + b"\n\n" for n in range(12)]

    provider = await start_provider(aiohttp_server, sending(*chunks))
    gw = await start_gateway(aiohttp_client, one_provider(provider), write_timeout=0.3)
    response = await gw.client.post(CHAT, json=chat(stream=True))
    received = b""
    while piece := await response.content.read(32768):
        received += piece
        await asyncio.sleep(0.02)  # slower than the provider, but never stalled for the whole limit
    assert received == b"".join(chunks)
    assert (await gw.settled())[0].error_type is None


# ---- providers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "then", "error_type"),
    [
        ((event(1), b'data: {"choices":[{"ind'), "reset", "truncated"),  # cut mid-line
        ((event(1), event(2)), "end", None),  # no [DONE]
        ((b"data: " + b"y" * (8 * 1024 * 1024) + b"\n\n",), "end", None),  # one giant line
        ((b"data: {not json}\n\n", b"\x00\xff garbage\n\n"), "end", None),  # not JSON, not text
    ],
)
async def test_broken_streams_give_the_client_what_arrived_and_an_honest_end(
    aiohttp_client, aiohttp_server, caplog, parts, then, error_type
) -> None:
    """Whatever the provider sends is relayed; a stream it cuts is cut for the client too (never a clean end that
    would pass for a whole answer), one it ends is ended."""
    provider = await start_provider(aiohttp_server, sending(*parts, then=then))
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    with captured_logs() as logs:
        response = await gw.client.post(CHAT, json=chat(stream=True))
        assert response.status == 200
        assert await read_until_cut(response) == (b"".join(parts), error_type == "truncated")
    assert (await gw.settled())[0].error_type == error_type
    assert not [e for e in logs if e.get("log_level") == "error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("aiohttp")]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'{"choices": [', "application/json"), (b"<html>oops</html>", "text/html"), (b"\x89PNG", "image/png")],
)
async def test_malformed_or_unexpected_answers_pass_through_as_sent(
    aiohttp_client, aiohttp_server, body, content_type
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    provider = await start_provider(aiohttp_server, answer)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(content_type)
    assert await response.read() == body


async def test_a_reset_before_the_head_is_502(aiohttp_client, aiohttp_server) -> None:
    async def reset(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(1)
        raise AssertionError("unreachable")

    provider = await start_provider(aiohttp_server, reset)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    response = await gw.client.post(CHAT, json=chat(stream=True))
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"


async def test_a_provider_that_is_not_http_is_502(aiohttp_client) -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await start_gateway(aiohttp_client, one_provider(f"http://127.0.0.1:{port}"))
        response = await gw.client.post(CHAT, json=chat())
        assert response.status == 502
        assert (await response.json())["error"]["type"] == "upstream_error"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_non_streamed_answer_shorter_than_announced_is_not_passed_off_as_whole(
    aiohttp_client, aiohttp_server
) -> None:
    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 100
        await response.prepare(request)
        await response.write(b'{"partial": ')
        assert request.transport is not None
        request.transport.abort()
        return response

    provider = await start_provider(aiohttp_server, short)
    gw = await start_gateway(aiohttp_client, one_provider(provider))
    async with raw_connection(gw.port) as raw:
        body = orjson.dumps(chat())
        await raw.send(post_head(length=len(body)) + body)
        answer = await raw.response()
    head, _, received = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 100" in head
    assert received == b'{"partial": '  # and then the connection closes: the client can tell
    assert (await gw.settled())[0].error_type == "truncated"
