"""A provider whose key rides in the URL query (`auth_type: query`) may echo that URL back: in a redirect's Location,
in any header, in an error body. The key never reaches the client: it is `[REDACTED]` in every relayed header and in
every non-2xx body (read whole, up to 1 MiB, so a key split across reads is caught too; beyond that, or in an
encoding the gateway cannot read, the answer is cut rather than relayed with the key). 2xx bodies pass untouched."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from gateway.upstream.scrub import scrub
from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import Gateway, start_gateway
from tests.fakes.net import read_until_cut
from tests.fakes.providers import FakeProvider, Handler, start_provider
from tests.fakes.tables import entry, table_of

# Characters that URL encoders treat differently, so the key has three written forms: as is, as yarl puts it in
# the query (`/` kept), and fully percent-encoded.
KEY = "AIza+query/key=0123456789-secret"
FORMS = (KEY, "AIza%2Bquery/key%3D0123456789-secret", quote(KEY, safe=""))
REDACTED = "[REDACTED]"

# Each route reaches the relay through its own handler: inference (api/inference.py) and the raw proxy (api/proxy.py).
ROUTES = {"chat": ("POST", CHAT), "proxy": ("POST", "/proxy/p/chat/completions")}


async def gateway_for(aiohttp_client: Any, provider: FakeProvider) -> Gateway:
    table = table_of(entry("p", provider.url, "query"), env={"P_API_KEY": KEY})
    return await start_gateway(aiohttp_client, table)


async def call(gw: Gateway, route: str, **options: Any) -> Any:
    method, path = ROUTES[route]
    return await gw.client.request(method, path, json=chat("p/m"), allow_redirects=False, **options)


def assert_no_key(text: str) -> None:
    for form in FORMS:
        assert form not in text


def echo_url(request: web.Request) -> str:
    """The URL as the provider saw it, key and all (as a provider's error message would quote it)."""
    return f"http://{request.host}{request.raw_path}"


def streamed(status: int, *parts: bytes, headers: dict[str, str] | None = None, pause: float = 0.05) -> Handler:
    """Chunked, with a pause between parts, so the parts reach the gateway in separate reads after the head."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json", **(headers or {})})
        await response.prepare(request)
        for part in parts:
            await asyncio.sleep(pause)
            await response.write(part)
        await response.write_eof()
        return response

    return handler


# --- headers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_a_redirect_location_echoing_the_url_does_not_hand_out_the_key(
    aiohttp_client, aiohttp_server, route
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        assert request.query["key"] == KEY  # the key did travel in the query
        return web.Response(
            status=307,
            headers={"Location": echo_url(request), "X-Debug": f"key={KEY}; encoded={quote(KEY, safe='')}"},
            text=f"Moved to {echo_url(request)}",
        )

    provider = await start_provider(aiohttp_server, redirect)
    gw = await gateway_for(aiohttp_client, provider)
    response = await call(gw, route)
    assert response.status == 307
    location = response.headers["Location"]
    assert location.startswith(f"http://127.0.0.1:{provider.port}/chat/completions?key=")
    assert location.endswith(f"key={REDACTED}")
    assert response.headers["X-Debug"] == f"key={REDACTED}; encoded={REDACTED}"
    assert_no_key(str(list(response.headers.items())))
    body = await response.text()
    assert REDACTED in body
    assert_no_key(body)


async def test_the_headers_of_a_2xx_answer_are_scrubbed_too(aiohttp_client, aiohttp_server) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True}, headers={"Content-Location": echo_url(request)})

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, ok))
    response = await call(gw, "chat")
    assert response.status == 200
    assert response.headers["Content-Location"].endswith(f"?key={REDACTED}")
    assert await response.json() == {"ok": True}


async def test_a_reason_phrase_echoing_the_key_is_scrubbed(aiohttp_client, aiohttp_server) -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, reason=f"Key {KEY} refused", text="no")

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, bad))
    response = await call(gw, "chat")
    assert (response.status, response.reason) == (403, f"Key {REDACTED} refused")


# --- error bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_an_error_body_echoing_the_url_does_not_hand_out_the_key(aiohttp_client, aiohttp_server, route) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        message = f"API key {KEY} not valid for {echo_url(request)} ({quote(KEY, safe='')})"
        return web.json_response({"error": {"code": 400, "message": message}}, status=400)

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, refuse))
    response = await call(gw, route)
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert message.startswith(f"API key {REDACTED} not valid for http://127.0.0.1:")
    assert message.endswith(f"/chat/completions?key={REDACTED} ({REDACTED})")
    assert_no_key(message)
    assert response.content_length == len(await response.read())


@pytest.mark.parametrize("route", ROUTES)
async def test_a_streamed_error_body_with_the_key_split_across_reads_is_scrubbed_whole(
    aiohttp_client, aiohttp_server, route
) -> None:
    body = b'{"error": {"message": "bad key ' + KEY.encode() + b'"}}'
    cut = body.index(KEY.encode()) + len(KEY) // 2
    provider = await start_provider(aiohttp_server, streamed(401, body[:cut], body[cut:]))
    gw = await gateway_for(aiohttp_client, provider)
    response = await call(gw, route)
    assert response.status == 401
    assert await response.read() == body.replace(KEY.encode(), REDACTED.encode())
    exchange = (await gw.settled())[0]
    assert exchange.error_type is None


async def test_an_error_body_beyond_one_write_is_read_whole_and_scrubbed(aiohttp_client, aiohttp_server) -> None:
    # Over 64 KiB: not taken in one piece with the head, the streamed path's buffer scrubs it.
    padding = b"x" * (300 * 1024)
    body = b'{"pad": "' + padding + b'", "url": "' + KEY.encode() + b'"}'
    provider = await start_provider(aiohttp_server, streamed(500, body[:70_000], body[70_000:]))
    gw = await gateway_for(aiohttp_client, provider)
    response = await call(gw, "chat")
    assert response.status == 500
    assert await response.read() == body.replace(KEY.encode(), REDACTED.encode())


async def test_an_error_body_over_a_mebibyte_is_cut_not_relayed(aiohttp_client, aiohttp_server) -> None:
    piece = b"y" * (256 * 1024) + KEY.encode()
    provider = await start_provider(aiohttp_server, streamed(500, *(piece for _ in range(6)), pause=0))
    gw = await gateway_for(aiohttp_client, provider)
    response = await call(gw, "chat")
    assert response.status == 500
    received, cut = await read_until_cut(response)
    assert cut
    assert KEY.encode() not in received
    exchange = (await gw.settled())[0]
    assert exchange.error_type == "truncated"


async def test_a_gzipped_error_body_is_scrubbed_and_sent_decoded(aiohttp_client, aiohttp_server) -> None:
    plain = b'{"error": "bad key ' + KEY.encode() + b'"}'

    async def zipped(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=400, body=gzip.compress(plain), headers={"Content-Encoding": "gzip", "Content-Type": "text/json"}
        )

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, zipped))
    response = await call(gw, "chat", auto_decompress=False)
    assert response.status == 400
    assert "Content-Encoding" not in response.headers
    assert await response.read() == plain.replace(KEY.encode(), REDACTED.encode())


async def test_an_error_body_in_an_encoding_the_gateway_cannot_read_is_cut(aiohttp_client, aiohttp_server) -> None:
    async def packed(request: web.Request) -> web.StreamResponse:
        return web.Response(status=400, body=b"\x0b\x02\x80opaque", headers={"Content-Encoding": "br"})

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, packed))
    response = await call(gw, "chat", auto_decompress=False)
    assert response.status == 400
    received, cut = await read_until_cut(response)
    assert (received, cut) == (b"", True)


async def test_a_provider_that_stalls_mid_error_body_gets_the_gateways_timeout(aiohttp_client, aiohttp_server) -> None:
    release = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        await response.write(b'{"error": "' + KEY.encode())
        await release.wait()
        return response

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, stalled))
    try:
        response = await call(gw, "chat")
        assert response.status == 504
        assert_no_key(await response.text())
        assert (await gw.settled())[0].error_type == "timeout"
    finally:
        release.set()


async def test_a_provider_that_breaks_off_mid_error_body_gets_the_gateways_502(aiohttp_client, aiohttp_server) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        await response.write(b'{"error": "' + KEY.encode())
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    gw = await gateway_for(aiohttp_client, await start_provider(aiohttp_server, broken))
    response = await call(gw, "chat")
    assert response.status == 502
    assert_no_key(await response.text())
    assert (await gw.settled())[0].error_type == "truncated"


# --- what is left alone -------------------------------------------------------------------------------------


async def test_a_2xx_body_is_never_touched(aiohttp_client, aiohttp_server) -> None:
    body = b'data: {"echo": "' + KEY.encode() + b'"}\n\n'
    provider = await start_provider(aiohttp_server, streamed(200, body, body))
    gw = await gateway_for(aiohttp_client, provider)
    response = await call(gw, "chat")
    assert response.status == 200
    assert await response.read() == body + body


async def test_another_providers_key_style_is_relayed_as_it_came(aiohttp_client, aiohttp_server) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": f"bad key {KEY}"}, status=401, headers={"Location": f"/?key={KEY}"})

    provider = await start_provider(aiohttp_server, refuse)
    gw = await start_gateway(aiohttp_client, table_of(entry("p", provider.url, "xheader"), env={"P_API_KEY": "other"}))
    response = await call(gw, "chat")
    assert response.status == 401
    assert response.headers["Location"] == f"/?key={KEY}"
    assert await response.json() == {"error": f"bad key {KEY}"}


def test_scrub_replaces_every_written_form_of_the_key() -> None:
    text = " ".join(FORMS) + " " + FORMS[2].replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    assert scrub(text.encode(), KEY.encode()) == b" ".join([REDACTED.encode()] * 4)
    assert scrub(b"nothing here", KEY.encode()) == b"nothing here"


async def test_a_model_list_error_that_echoes_the_url_does_not_hand_out_the_key(fake_provider, gateway) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"error": f"bad request to {request.url}"}, status=400)

    fake = await fake_provider({"/v1/models": echo})
    client = await gateway(entry("g", fake.url + "/v1", "query"), env={"G_API_KEY": "sk-query-secret-123"})
    response = await client.get("/v1/models?provider=g")
    assert response.status == 400
    text = await response.text()
    assert "sk-query-secret-123" not in text and "[REDACTED]" in text
