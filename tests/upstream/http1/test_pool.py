"""The provider connection pool (gateway/upstream/http1/pool.py) and its use through the transport by fetch: idle
caps, reuse, the open cap, the idle timeout, stale connections, outbound proxies (forwarding and CONNECT), TLS, and
connect failures. Every provider and proxy is a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict
from yarl import URL

from gateway.upstream.call import fetch
from gateway.upstream.http1.client import Http1Transport, request_head
from gateway.upstream.http1.connection import Connection
from gateway.upstream.http1.pool import Pool, proxy_problems
from gateway.upstream.transport import (
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    TLSFailed,
    UpstreamRequest,
    gateway_error,
)
from tests.fakes.bodies import CHAT, chat
from tests.fakes.gateways import start_gateway
from tests.fakes.net import RawServer, free_port, wait_for
from tests.fakes.providers import FakeProvider
from tests.fakes.tables import one_provider

LIMIT = 5.0  # the bound on every wait; nothing here should come near it
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


# ---- raw servers -----------------------------------------------------------------------------------------------


class Provider(RawServer):
    """A keep-alive provider. Each request on connection `c` (numbered from 0), the `n`th on it, gets
    `answer(c, n)`; None closes the connection without answering. With `gate`, no answer goes out before that many
    requests are in (so they are concurrent); with `close_after`, each connection is closed after its answer."""

    def __init__(
        self, answer: Callable[[int, int], bytes | None] | None = None, gate: int = 0, close_after: bool = False
    ) -> None:
        super().__init__()
        self.answer = answer or (lambda c, n: OK)
        self.gate = gate
        self.close_after = close_after
        self.connections = 0
        self.ended = 0  # connections over, whichever side closed them
        self.requests: list[tuple[int, bytes]] = []
        self._all_in = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            for n in range(1_000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests.append((number, head))
                if len(self.requests) >= self.gate:
                    self._all_in.set()
                await self._all_in.wait()
                answer = self.answer(number, n)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        finally:
            self.ended += 1


class Proxy(RawServer):
    """An outbound HTTP proxy: records each request line and its headers; forwards absolute-form requests (in
    origin form, without Proxy-Authorization) and tunnels CONNECT. `connect_answer` replaces the CONNECT
    handling: its bytes are sent (or, when empty, nothing is) and the proxy waits for the client to go."""

    def __init__(self, connect_answer: bytes | None = None) -> None:
        super().__init__()
        self.connect_answer = connect_answer
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.tunnelled = bytearray()  # what the client sent through a tunnel
        self.client_gone = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")[:-2]
        headers = dict(field.split(": ", 1) for field in fields)
        self.seen.append((line, headers))
        method, target, _ = line.split(" ")
        if method == "CONNECT" and self.connect_answer is not None:
            writer.write(self.connect_answer)
            while await reader.read(65536):
                pass
            self.client_gone.set()
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            record: bytearray | None = self.tunnelled
        else:
            url = urlsplit(target)
            assert url.hostname is not None and url.port is not None
            upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port)
            kept = [field for field in fields if not field.lower().startswith("proxy-authorization:")]
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream_writer.write("\r\n".join([f"{method} {path} HTTP/1.1", *kept, "", ""]).encode("latin-1"))
            record = None
        await asyncio.gather(_pipe(reader, upstream_writer, record), _pipe(upstream_reader, writer, None))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray | None) -> None:
    try:
        while data := await source.read(65536):
            if record is not None:
                record += data
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def make(**options: Any) -> Pool:
        options.setdefault("max_idle", 10)
        options.setdefault("max_idle_per_host", 10)
        options.setdefault("proxies", {})  # never the environment's
        pool = Pool(**options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()
    await asyncio.sleep(0)


# ---- helpers ---------------------------------------------------------------------------------------------------


def url_of(server: RawServer, path: str = "/v1/models", scheme: str = "http") -> URL:
    return URL(f"{scheme}://127.0.0.1:{server.port}{path}")


async def get(pool: Pool, url: URL) -> tuple[Connection, bool, bytes]:
    """One GET through the pool's own parts, the connection kept (neither released nor discarded)."""
    origin = pool.origin(url)
    async with asyncio.timeout(LIMIT):
        conn, reused = await pool.acquire(origin, LIMIT)
        try:
            conn.send(request_head("GET", url, origin, (), None), None)
            await conn.head()
            parts = []
            while chunk := await conn.read(LIMIT):
                parts.append(chunk)
        except BaseException:
            pool.discard(conn)
            raise
    return conn, reused, b"".join(parts)


async def fetched(pool: Pool, url: URL) -> tuple[int, CIMultiDict[str], bytes]:
    async with asyncio.timeout(LIMIT):
        return await fetch(Http1Transport(pool), UpstreamRequest("GET", url, (), None), LIMIT, 1024 * 1024)


async def acquire_while_releasing(pool: Pool, url: URL, held: Connection, limit: float) -> tuple[Connection, bool]:
    """Acquire for `url` while `held` is in use, and release `held` a moment later: the acquire must wait for
    the release (the pool being at `max_open`), then get a connection within `limit`."""
    order: list[str] = []

    async def acquire() -> tuple[Connection, bool]:
        got = await pool.acquire(pool.origin(url), LIMIT)
        order.append("acquired")
        return got

    async def release() -> None:
        await asyncio.sleep(0.1)
        order.append("released")
        pool.release(held)

    got, _ = await asyncio.wait_for(asyncio.gather(acquire(), release()), limit)
    assert order == ["released", "acquired"]
    return got


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the IP address 127.0.0.1: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


async def tls_target(aiohttp_server: Any, certificate: tuple[Path, Path]) -> tuple[Any, list[tuple[str, str]]]:
    """An aiohttp server over TLS with the test certificate; it records (path, Host) of each request."""
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path_qs, request.headers["Host"]))
        return web.Response(text="secret answer")

    fake = await FakeProvider(default=handler, record=False).start(aiohttp_server, ssl=server_tls(certificate))
    return fake.server, seen


# ---- idle caps and reuse ---------------------------------------------------------------------------------------


async def test_idle_connections_beyond_the_per_host_cap_are_closed_on_release(servers, pools) -> None:
    provider = await servers(Provider(gate=5))
    pool = pools(max_idle=10, max_idle_per_host=2)
    answers = await asyncio.gather(*(fetched(pool, url_of(provider)) for _ in range(5)))
    assert [(status, body) for status, _, body in answers] == [(200, b"ok")] * 5
    assert provider.connections == 5
    assert (pool.idle_connections, pool.open_connections) == (2, 2)
    await wait_for(lambda: provider.ended == 3)
    # The two kept serve the next requests.
    for _ in range(2):
        assert (await fetched(pool, url_of(provider)))[2] == b"ok"
    assert provider.connections == 5
    assert provider.ended == 3


async def test_the_total_idle_cap_spans_hosts(servers, pools) -> None:
    first, second = await servers(Provider(gate=2)), await servers(Provider(gate=2))
    pool = pools(max_idle=3, max_idle_per_host=10)
    urls = [url_of(first), url_of(first), url_of(second), url_of(second)]
    answers = await asyncio.gather(*(fetched(pool, url) for url in urls))
    assert [body for _, _, body in answers] == [b"ok"] * 4
    assert (first.connections, second.connections) == (2, 2)
    assert (pool.idle_connections, pool.open_connections) == (3, 3)
    await wait_for(lambda: first.ended + second.ended == 1)


async def test_a_released_connection_serves_the_next_request(servers, pools) -> None:
    provider = await servers(Provider())
    pool = pools()
    conn, reused, body = await get(pool, url_of(provider))
    assert (reused, body) == (False, b"ok")
    pool.release(conn)
    assert (pool.idle_connections, pool.open_connections) == (1, 1)
    again, reused, body = await get(pool, url_of(provider, "/v1/other"))
    assert (again, reused, body) == (conn, True, b"ok")
    assert (pool.idle_connections, pool.open_connections) == (0, 1)
    pool.release(again)
    assert provider.connections == 1
    assert [(number, head.split(b"\r\n")[0]) for number, head in provider.requests] == [
        (0, b"GET /v1/models HTTP/1.1"),
        (0, b"GET /v1/other HTTP/1.1"),
    ]


async def test_fetch_reuses_the_connection(servers, pools) -> None:
    provider = await servers(Provider())
    pool = pools()
    for _ in range(3):
        status, headers, body = await fetched(pool, url_of(provider))
        assert (status, headers["Content-Type"], body) == (200, "text/plain", b"ok")
    assert provider.connections == 1
    assert [number for number, _ in provider.requests] == [0, 0, 0]
    assert provider.requests[0][1] == (b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % provider.port)


async def test_a_connection_that_cannot_serve_again_is_closed_on_release(servers, pools) -> None:
    provider = await servers(Provider(answer=lambda c, n: CLOSING))
    pool = pools()
    conn, _, body = await get(pool, url_of(provider))
    assert body == b"ok"
    pool.release(conn)
    assert conn.closed
    assert (pool.idle_connections, pool.open_connections) == (0, 0)
    await wait_for(lambda: provider.ended == 1)


async def test_close_shuts_the_idle_connections(servers, pools) -> None:
    provider = await servers(Provider())
    pool = pools()
    first, _, _ = await get(pool, url_of(provider))
    second, _, _ = await get(pool, url_of(provider))
    pool.release(first)
    await pool.close()
    assert first.closed
    assert (pool.idle_connections, pool.open_connections) == (0, 1)
    await wait_for(lambda: provider.ended == 1)
    pool.release(second)  # after close: closed, not kept
    assert second.closed
    assert (pool.idle_connections, pool.open_connections) == (0, 0)
    await wait_for(lambda: provider.ended == 2)


# ---- the open cap ----------------------------------------------------------------------------------------------


async def test_max_open_a_second_acquire_waits_until_the_first_connection_is_dropped(servers, pools) -> None:
    provider = await servers(Provider(answer=lambda c, n: CLOSING))
    pool = pools(max_open=1)
    first, _, _ = await get(pool, url_of(provider))
    # Not reusable (Connection: close): dropped on release, its slot handed on.
    second, reused = await acquire_while_releasing(pool, url_of(provider), first, LIMIT)
    assert (second is first, reused) == (False, False)
    assert pool.open_connections == 1
    pool.discard(second)
    assert provider.connections == 2
    assert pool.open_connections == 0


@pytest.mark.parametrize("other_host", [False, True], ids=["same-host", "other-host"])
async def test_max_open_a_second_acquire_gets_a_connection_once_the_first_is_released(
    servers, pools, other_host
) -> None:
    provider, other = await servers(Provider()), await servers(Provider())
    pool = pools(max_open=1)
    first, _, _ = await get(pool, url_of(provider))
    target = url_of(other if other_host else provider)
    # Reusable: kept idle on release.
    second, reused = await acquire_while_releasing(pool, target, first, 2)
    if other_host:
        # The idle connection elsewhere gives its slot up.
        assert (second is first, reused, first.closed) == (False, False, True)
        await wait_for(lambda: provider.ended == 1)
    else:
        assert (second, reused) == (first, True)
    assert pool.open_connections == 1
    pool.discard(second)


async def test_max_open_a_wait_for_a_free_connection_is_bounded_by_the_connect_limit(servers, pools) -> None:
    provider = await servers(Provider())
    pool = pools(max_open=1)
    first, _, _ = await get(pool, url_of(provider))
    with pytest.raises(ConnectTimedOut) as caught:
        await asyncio.wait_for(pool.acquire(pool.origin(url_of(provider)), 0.2), 5)
    assert str(caught.value) == "no free connection within 0.2s (1 open, the CLIENT_MAX_CONNS cap)"
    error = gateway_error(caught.value)
    assert (error.status, error.code, error.message) == (
        504,
        "upstream_timeout",
        "the provider could not connect in time",
    )
    # The waiter gave up its place: the next release still reaches the next one in line.
    second, reused = await acquire_while_releasing(pool, url_of(provider), first, 2)
    assert (second, reused) == (first, True)
    pool.discard(second)


# ---- idle timeout and stale connections ------------------------------------------------------------------------


async def test_idle_connections_are_closed_after_the_idle_timeout(servers, pools) -> None:
    provider = await servers(Provider())
    pool = pools(idle_timeout=0.2)
    assert (await fetched(pool, url_of(provider)))[2] == b"ok"
    assert (pool.idle_connections, pool.open_connections) == (1, 1)
    await wait_for(lambda: pool.idle_connections == 0)
    assert pool.open_connections == 0
    await wait_for(lambda: provider.ended == 1)
    # The next request opens a new connection.
    assert (await fetched(pool, url_of(provider)))[2] == b"ok"
    assert provider.connections == 2


async def test_a_connection_the_provider_closed_while_idle_is_not_handed_out(servers, pools) -> None:
    # Keep-alive by its words, yet the provider closes the connection after answering.
    provider = await servers(Provider(close_after=True))
    pool = pools()
    first, _, _ = await get(pool, url_of(provider))
    assert first.reusable
    pool.release(first)
    assert pool.idle_connections == 1
    await wait_for(lambda: first.closed)
    second, reused, body = await get(pool, url_of(provider))
    assert (second is first, reused, body) == (False, False, b"ok")
    assert (pool.idle_connections, pool.open_connections) == (0, 1)
    assert provider.connections == 2
    pool.discard(second)


async def test_fetch_replaces_a_reused_connection_the_provider_closes_at_the_next_request(servers, pools) -> None:
    """Connection 0 answers its first request, then closes on its second without a byte: the request never
    reached anyone, so it goes again, once, on a new connection, and the caller sees a plain answer."""
    provider = await servers(Provider(answer=lambda c, n: None if (c, n) == (0, 1) else OK))
    pool = pools()
    assert (await fetched(pool, url_of(provider)))[::2] == (200, b"ok")
    assert pool.idle_connections == 1
    assert (await fetched(pool, url_of(provider, "/v1/again")))[::2] == (200, b"ok")
    assert provider.connections == 2
    assert [(number, head.split(b"\r\n")[0]) for number, head in provider.requests] == [
        (0, b"GET /v1/models HTTP/1.1"),
        (0, b"GET /v1/again HTTP/1.1"),
        (1, b"GET /v1/again HTTP/1.1"),
    ]
    assert (pool.idle_connections, pool.open_connections) == (1, 1)


async def test_a_post_on_a_reused_connection_closed_without_answer_is_not_replayed(servers, pools) -> None:
    """Connection 0 answers its first request, then closes on the second without a byte: the provider may have
    read that POST, so it is not sent again; with an idempotency key it is, once, on a new connection."""
    provider = await servers(Provider(answer=lambda c, n: None if (c, n) in ((0, 1), (1, 1)) else OK))
    pool = pools()
    transport = Http1Transport(pool)
    assert (await fetched(pool, url_of(provider)))[::2] == (200, b"ok")
    post = UpstreamRequest("POST", url_of(provider, "/v1/chat/completions"), (), b"{}")
    with pytest.raises(Disconnected) as caught:
        await transport.send(post, connect=LIMIT, head_by=None)
    assert not caught.value.retryable
    assert (provider.connections, len(provider.requests)) == (1, 2)
    assert (await fetched(pool, url_of(provider)))[::2] == (200, b"ok")  # connection 1, kept idle
    keyed = post._replace(headers=((b"Idempotency-Key", b"k-1"),))
    answer = await transport.send(keyed, connect=LIMIT, head_by=None)
    assert answer.status == 200
    answer.discard()
    assert [head.split(b"\r\n")[0] for _, head in provider.requests][-2:] == [
        b"POST /v1/chat/completions HTTP/1.1",
        b"POST /v1/chat/completions HTTP/1.1",
    ]
    assert provider.connections == 3


async def test_fetch_does_not_repeat_a_request_a_new_connection_got_no_answer_to(servers, pools) -> None:
    provider = await servers(Provider(answer=lambda c, n: None))
    pool = pools()
    with pytest.raises(Disconnected, match=r"^the provider closed the connection$"):
        await fetched(pool, url_of(provider))
    assert provider.connections == 1
    assert len(provider.requests) == 1
    assert (pool.idle_connections, pool.open_connections) == (0, 0)


# ---- outbound proxies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "user", "password"),
    [("user:pw", "user", "pw"), ("us%40er:p%3Aw%2F", "us@er", "p:w/")],
    ids=["plain", "percent-encoded"],
)
async def test_plain_http_goes_through_the_proxy_in_absolute_form_with_its_credentials(
    servers, pools, fake_provider, credentials, user, password
) -> None:
    async def pong(request: web.Request) -> web.Response:
        return web.Response(text="pong", headers={"X-Target": "yes"})

    target = await fake_provider({"/v1/ping": pong})
    proxy = await servers(Proxy())
    pool = pools(proxies={"http": f"http://{credentials}@127.0.0.1:{proxy.port}"})
    port = target.server.port
    status, headers, body = await fetched(pool, URL(f"http://127.0.0.1:{port}/v1/ping?a=1&b=%20"))
    assert (status, headers["X-Target"], body) == (200, "yes", b"pong")
    assert proxy.seen == [
        (
            f"GET http://127.0.0.1:{port}/v1/ping?a=1&b=%20 HTTP/1.1",
            {"Host": f"127.0.0.1:{port}", "Proxy-Authorization": basic(user, password)},
        )
    ]
    assert (target.last.path, target.last.query, target.last.headers["Host"]) == (
        "/v1/ping",
        {"a": "1", "b": " "},
        f"127.0.0.1:{port}",
    )


async def test_a_proxy_without_credentials_gets_no_proxy_authorization(servers, pools, fake_provider) -> None:
    target = await fake_provider()
    proxy = await servers(Proxy())
    pool = pools(proxies={"http": f"127.0.0.1:{proxy.port}"})  # no scheme: http:// is meant
    assert (await fetched(pool, URL(f"{target.url}/v1/models")))[0] == 200
    assert [line for line, _ in proxy.seen] == [f"GET {target.url}/v1/models HTTP/1.1"]
    assert "Proxy-Authorization" not in proxy.seen[0][1]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "example.com, 127.0.0.1"])
async def test_no_proxy_bypasses_the_proxy(servers, pools, fake_provider, no_proxy) -> None:
    target = await fake_provider()
    proxy = await servers(Proxy())
    pool = pools(proxies={"http": f"http://user:pw@127.0.0.1:{proxy.port}", "no": no_proxy})
    status, _, _ = await fetched(pool, URL(f"{target.url}/v1/models"))
    assert status == 200
    assert proxy.seen == []
    assert len(target.requests) == 1
    assert "Proxy-Authorization" not in target.last.headers


async def test_https_goes_through_a_connect_tunnel(servers, pools, aiohttp_server, certificate) -> None:
    server, seen = await tls_target(aiohttp_server, certificate)
    proxy = await servers(Proxy())
    pool = pools(
        ssl_context=trusting(certificate),
        # The https entry is the one used for https:// (the http one points at a port where nothing listens).
        proxies={"https": f"http://user:pw@127.0.0.1:{proxy.port}", "http": f"http://127.0.0.1:{free_port()}"},
    )
    port = server.port
    status, _, body = await fetched(pool, URL(f"https://127.0.0.1:{port}/secure/path?q=1"))
    assert (status, body) == (200, b"secret answer")
    assert proxy.seen == [
        (
            f"CONNECT 127.0.0.1:{port} HTTP/1.1",
            {"Host": f"127.0.0.1:{port}", "Proxy-Authorization": basic("user", "pw")},
        )
    ]
    assert seen == [("/secure/path?q=1", f"127.0.0.1:{port}")]
    # The proxy carried only TLS: neither the request nor the credentials in clear.
    assert proxy.tunnelled
    assert b"/secure/path" not in proxy.tunnelled
    assert b"Proxy-Authorization" not in proxy.tunnelled
    # The tunnel is kept alive like any connection.
    assert (await fetched(pool, URL(f"https://127.0.0.1:{port}/again")))[2] == b"secret answer"
    assert len(proxy.seen) == 1


async def test_a_proxy_refusing_connect_is_a_connect_failure(servers, pools) -> None:
    proxy = await servers(
        Proxy(connect_answer=b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    )
    pool = pools(proxies={"https": f"http://127.0.0.1:{proxy.port}"})
    with pytest.raises(ConnectFailed, match=r"^cannot connect \(the outbound proxy answered 407\)$"):
        await pool.acquire(pool.origin(URL("https://127.0.0.1:1/v1/models")), LIMIT)
    assert pool.open_connections == 0
    async with asyncio.timeout(LIMIT):
        await proxy.client_gone.wait()


async def test_a_proxy_silent_after_connect_times_out_and_its_connection_is_closed(servers, pools) -> None:
    proxy = await servers(Proxy(connect_answer=b""))
    pool = pools(proxies={"https": f"http://127.0.0.1:{proxy.port}"})
    with pytest.raises(Exception, match=r"^cannot connect within 0\.3s$"):
        await pool.acquire(pool.origin(URL("https://127.0.0.1:1/v1/models")), 0.3)
    assert pool.open_connections == 0
    assert [line for line, _ in proxy.seen] == ["CONNECT 127.0.0.1:1 HTTP/1.1"]
    async with asyncio.timeout(2):
        await proxy.client_gone.wait()


async def test_a_proxy_the_pool_cannot_speak_is_refused(pools) -> None:
    pool = pools(proxies={"https": "https://127.0.0.1:3128"})
    with pytest.raises(ValueError, match=r"^outbound proxy https:// is not supported; use an http:// proxy$"):
        pool.origin(URL("https://127.0.0.1:1/v1/models"))
    env = {
        "HTTP_PROXY": "http://127.0.0.1:3128",
        "HTTPS_PROXY": "https://127.0.0.1:3128",
        "http_proxy": "socks5://127.0.0.1:1080",
        "https_proxy": "127.0.0.1:3128",  # no scheme: http:// is meant
    }
    assert proxy_problems(env) == [
        "HTTPS_PROXY must be an http:// proxy URL (a CONNECT tunnel carries TLS to the provider)",
        "http_proxy must be an http:// proxy URL (a CONNECT tunnel carries TLS to the provider)",
    ]


# ---- TLS and connect failures ----------------------------------------------------------------------------------


async def test_https_direct_with_a_trusted_certificate(pools, aiohttp_server, certificate) -> None:
    server, seen = await tls_target(aiohttp_server, certificate)
    pool = pools(ssl_context=trusting(certificate))
    for _ in range(2):
        status, _, body = await fetched(pool, URL(f"https://127.0.0.1:{server.port}/v1/models"))
        assert (status, body) == (200, b"secret answer")
    assert seen == [("/v1/models", f"127.0.0.1:{server.port}")] * 2
    assert (pool.idle_connections, pool.open_connections) == (1, 1)


async def test_an_untrusted_certificate_is_a_tls_failure(pools, aiohttp_server, certificate) -> None:
    server, seen = await tls_target(aiohttp_server, certificate)
    pool = pools()  # the system's trust store: the test certificate is not in it
    with pytest.raises(TLSFailed, match=r"^TLS with the provider failed \(.*CERTIFICATE_VERIFY_FAILED") as caught:
        await fetched(pool, URL(f"https://127.0.0.1:{server.port}/v1/models"))
    assert not caught.value.retryable
    assert seen == []
    assert (pool.idle_connections, pool.open_connections) == (0, 0)


async def test_a_tls_failure_is_not_retried_by_the_gateway(aiohttp_client, certificate) -> None:
    """Retries are on (3), yet the provider sees one connection: a certificate failure is not transient."""
    accepted = 0

    def counted() -> asyncio.Protocol:
        nonlocal accepted
        accepted += 1
        return asyncio.Protocol()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(counted, "127.0.0.1", 0, ssl=server_tls(certificate))
    try:
        port = server.sockets[0].getsockname()[1]
        table = one_provider(f"https://127.0.0.1:{port}", retries={"max_retries": 3})
        gw = await start_gateway(aiohttp_client, table, client_timeout=5, connect_timeout=5)
        response = await gw.client.post(CHAT, json=chat())
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "upstream_unreachable"
        assert "TLS with the provider failed" in error["message"]
        assert accepted == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_a_post_closed_without_answer_reaches_the_provider_once(aiohttp_client, servers) -> None:
    """The provider read the request and closed without a byte: it may have started the work, so a POST is not
    sent again (Go's net/http rule), whatever the retry settings."""
    provider = await servers(Provider(answer=lambda c, n: None))
    table = one_provider(f"http://127.0.0.1:{provider.port}", retries={"max_retries": 3})
    gw = await start_gateway(aiohttp_client, table, client_timeout=5, connect_timeout=5)
    response = await gw.client.post(CHAT, json=chat())
    assert response.status == 502
    assert (await response.json())["error"]["message"] == (
        "the provider could not be reached: the provider closed the connection"
    )
    assert (provider.connections, len(provider.requests)) == (1, 1)
    # /proxy POSTs (batches, files) alike.
    proxied = await gw.client.post("/proxy/p/batches", data=b"{}")
    assert proxied.status == 502
    assert len(provider.requests) == 2


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", CHAT, {"Idempotency-Key": "req-1"}),
        ("POST", CHAT, {"X-Idempotency-Key": "req-1"}),
        ("GET", "/proxy/p/models", {}),
    ],
)
async def test_a_replayable_request_closed_without_answer_is_retried(
    aiohttp_client, servers, method, path, headers
) -> None:
    """The control: with the same retry settings, a request that is harmless to repeat is retried."""
    provider = await servers(Provider(answer=lambda c, n: None))
    table = one_provider(f"http://127.0.0.1:{provider.port}", retries={"max_retries": 3})
    gw = await start_gateway(aiohttp_client, table, client_timeout=5, connect_timeout=5)
    body = chat() if method == "POST" else None
    response = await gw.client.request(method, path, json=body, headers=headers)
    assert response.status == 502
    assert (provider.connections, len(provider.requests)) == (4, 4)


async def test_a_closed_port_is_a_connect_failure(pools) -> None:
    pool = pools()
    port = free_port()
    with pytest.raises(ConnectFailed, match=r"^cannot connect \(Connection refused\)$") as caught:
        await fetched(pool, URL(f"http://127.0.0.1:{port}/v1/models"))
    assert caught.value.retryable
    assert (pool.idle_connections, pool.open_connections) == (0, 0)


@pytest.mark.parametrize(
    ("url", "proxies", "message"),
    [
        ("https://api.provider.invalid/v1/models?key=sk-secret", {}, r"^cannot resolve api\.provider\.invalid$"),
        (
            "https://api.example.com/v1/models",
            {"https": "http://user:sk-proxy-secret@proxy.invalid:3128"},
            r"^cannot resolve proxy\.invalid \(the outbound proxy\)$",
        ),
    ],
)
async def test_a_host_that_does_not_resolve_is_named(pools, url: str, proxies: dict[str, str], message: str) -> None:
    """A DNS failure names the host (never the URL, its query or a proxy's credentials), not the resolver's errno
    plumbing ("Unknown error -2", "Name or service not known"). `.invalid` never resolves (RFC 6761): no network
    is needed, and the resolver says so at once."""
    pool = pools(proxies=proxies)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectFailed, match=message) as caught:
        await fetched(pool, URL(url))
    assert asyncio.get_running_loop().time() - started < LIMIT
    assert "secret" not in str(caught.value)
    assert gateway_error(caught.value).message == f"the provider could not be reached: {caught.value}"
    assert (pool.idle_connections, pool.open_connections) == (0, 0)
