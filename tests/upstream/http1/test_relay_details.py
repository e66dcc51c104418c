"""Details of a provider's answer as the client of the gateway sees them: raw providers on 127.0.0.1 that send
exact bytes, a gateway app relaying them (through the lean HTTP/1.1 client) and a raw client reading its answer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.fakes.gateways import Gateway, start_gateway
from tests.fakes.net import RawServer, raw_connection
from tests.fakes.tables import one_provider
from tests.fakes.telemetry import captured_logs

LIMIT = 5.0  # the bound on every wait; nothing here should come near it
REQUEST = b"GET /proxy/p/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


class Provider(RawServer):
    """A keep-alive provider that answers each request with `pieces`, a short pause between them (so that a body
    after the head arrives in a later read and the gateway streams it)."""

    def __init__(self, *pieces: bytes) -> None:
        super().__init__()
        self.pieces = pieces
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            self.requests += 1
            for n, piece in enumerate(self.pieces):
                if n:
                    await asyncio.sleep(0.05)
                writer.write(piece)
                await writer.drain()


@pytest.fixture
async def relay(aiohttp_client):
    started: list[Provider] = []

    async def start(*pieces: bytes) -> Gateway:
        provider = Provider(*pieces)
        await provider.start()
        started.append(provider)
        table = one_provider(f"http://127.0.0.1:{provider.port}")
        return await start_gateway(aiohttp_client, table, client_timeout=LIMIT, read_timeout=LIMIT)

    yield start
    for provider in started:
        await provider.stop()


async def answer_of(gw: Gateway) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The gateway's answer to one GET: its status line, its headers (lower-cased names) and its body."""
    async with raw_connection(gw.port) as raw:
        await raw.send(REQUEST)
        answer = await raw.response(LIMIT)
    head, _, body = answer.partition(b"\r\n\r\n")
    line, *fields = head.split(b"\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = dechunked(body)
    return line, headers, body


def dechunked(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            return body
        body += data[:size]
        data = data[size + 2 :]


def no_errors(logs: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("status", "reason", "standard"),
    [
        (b"200", b"O\x01K", b"OK"),
        (b"200", b"\x00", b"OK"),
        (b"200", b"OK\x7f", b"OK"),
        (b"404", b"Not\x1bFound", b"Not Found"),
        (b"429", b"Trop de requ\xeates", b"Too Many Requests"),
    ],
    ids=["soh", "nul", "del", "escape-404", "latin-1-429"],
)
async def test_a_reason_phrase_that_is_not_plain_text_reaches_the_client_as_the_standard_one(
    relay, caplog, status, reason, standard, streamed
) -> None:
    """aiohttp refuses to write a control byte in a status line: the client lost its answer while the access line
    said 200, and an error with its traceback was logged for each request."""
    head = b"HTTP/1.1 " + status + b" " + reason + b"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    gw = await relay(*((head, b"hello") if streamed else (head + b"hello",)))
    with captured_logs() as logs:
        line, headers, body = await answer_of(gw)
        await gw.settled()
    assert line == b"HTTP/1.1 " + status + b" " + standard
    assert (headers[b"content-type"], body) == (b"text/plain", b"hello")
    no_errors(logs, caplog)


async def test_a_plain_reason_phrase_is_relayed_as_it_is(relay) -> None:
    gw = await relay(b"HTTP/1.1 200 Fine\tThanks\r\nContent-Length: 2\r\n\r\nok")
    line, _, body = await answer_of(gw)
    assert (line, body) == (b"HTTP/1.1 200 Fine\tThanks", b"ok")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_the_trailers_of_a_chunked_answer_are_not_relayed_as_headers(relay, streamed) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    rest = b"5\r\nhello\r\n0\r\nSet-Cookie: session=provider\r\nX-Checksum: 1234\r\n\r\n"
    gw = await relay(*((head, rest) if streamed else (head + rest,)))
    line, headers, body = await answer_of(gw)
    assert (line, body) == (b"HTTP/1.1 200 OK", b"hello")
    assert b"set-cookie" not in headers
    assert b"x-checksum" not in headers


async def test_headers_the_providers_connection_header_names_are_not_relayed(relay) -> None:
    gw = await relay(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, x-other\r\nX-Hop: 1\r\nX-Other: 2\r\n"
        b"X-Kept: 3\r\nContent-Length: 2\r\n\r\nok"
    )
    line, headers, body = await answer_of(gw)
    assert (line, body, headers[b"x-kept"]) == (b"HTTP/1.1 200 OK", b"ok", b"3")
    assert b"x-hop" not in headers and b"x-other" not in headers


async def test_a_status_beyond_599_is_a_bad_answer(relay) -> None:
    gw = await relay(b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok")
    line, _, body = await answer_of(gw)
    assert line == b"HTTP/1.1 502 Bad Gateway"
    assert b"upstream_unreachable" in body


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_an_answer_without_a_content_type_reaches_the_client_without_one(relay, streamed) -> None:
    """aiohttp gives an untyped body `application/octet-stream`; the provider sent no type, so none is added."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    gw = await relay(*((head, b"hello") if streamed else (head + b"hello",)))
    line, headers, body = await answer_of(gw)
    assert (line, body) == (b"HTTP/1.1 200 OK", b"hello")
    assert b"content-type" not in headers


async def test_a_utf8_header_value_is_relayed_byte_for_byte(relay) -> None:
    value = 'attachment; filename="caf\u00e9-\u97f3.mp3"'.encode()
    gw = await relay(b"HTTP/1.1 200 OK\r\nContent-Disposition: " + value + b"\r\nContent-Length: 2\r\n\r\nok")
    line, headers, body = await answer_of(gw)
    assert (line, body, headers[b"content-disposition"]) == (b"HTTP/1.1 200 OK", b"ok", value)


async def test_a_header_value_that_is_not_utf8_is_dropped_not_re_encoded(relay, caplog) -> None:
    """Latin-1 `\\xe9` would have reached the client as UTF-8 `\\xc3\\xa9`: another value. It is not relayed, and the
    log names the field without its value."""
    gw = await relay(
        b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nX-Kept: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    with captured_logs() as logs:
        line, headers, body = await answer_of(gw)
        await gw.settled()
    assert (line, body, headers[b"x-kept"]) == (b"HTTP/1.1 200 OK", b"ok", b"1")
    assert b"x-latin" not in headers
    dropped = [e for e in logs if e.get("event") == "provider header not relayed: its value is not UTF-8"]
    assert [(e["header"], e["log_level"]) for e in dropped] == [("X-Latin", "warning")]
    assert "caf" not in str(dropped)
    no_errors(logs, caplog)


async def test_a_trailer_that_never_ends_is_cut_off_not_buffered(relay) -> None:
    """After the last chunk a provider sends one trailer field without end: llhttp keeps every byte of it. The
    gateway stops reading past 64 KiB, and the client's answer is cut (it never looks whole)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    endless = [b"0\r\nX-Trailer: "] + [b"a" * 16384] * 8  # 128 KiB and still no end of the field
    gw = await relay(head, *endless)
    with captured_logs() as logs:
        async with raw_connection(gw.port) as raw:
            await raw.send(REQUEST)
            answer = await raw.response(LIMIT)
        await gw.settled()
    ended = [e for e in logs if e.get("event") == "upstream body ended early"]
    assert [e["error"] for e in ended] == ["InvalidAnswer"]  # refused, not left to the read time-out
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"hello" in answer
    assert not answer.endswith(b"0\r\n\r\n")  # no terminating chunk: the client knows the answer broke off
