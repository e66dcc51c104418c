"""Logs captured from a real gateway: the exact access line, request ids on every line, and no key anywhere."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import yaml
from aiohttp.test_utils import make_mocked_request

from gateway.exchange import Exchange
from gateway.telemetry import access_log
from gateway.telemetry.logs import configure_logging, json_lines
from gateway.telemetry.redact import REDACTED, Redactor, secret_values
from tests.fakes.bodies import chat
from tests.fakes.gateways import gateway_app, telemetry_settings
from tests.fakes.net import free_port, read_until_cut
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import OTHER_KEY, PROVIDER_KEY, TELEMETRY_ENV, entry, telemetry_table

CLIENT_KEY = "client-key-abcdefgh-12345"


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """Production logging into a buffer, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("production", secrets=secret_values(TELEMETRY_ENV), stream=buffer, cache=False)
    yield buffer
    structlog.reset_defaults()
    root.handlers, _ = saved
    root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in lines(buffer) if line["event"] == "request"]


@pytest.fixture
async def setup(aiohttp_server: Any, aiohttp_client: Any, capture: io.StringIO) -> Any:
    fake = await ChatProvider().start(aiohttp_server)
    client = await aiohttp_client(gateway_app(telemetry_settings(), telemetry_table(fake.port, free_port())))
    return fake, client, capture


async def test_access_line_holds_exact_fields(setup: Any) -> None:
    fake, client, buffer = setup
    body = orjson.dumps(chat("fake/plain"))
    async with client.post("/v1/chat/completions", data=body, headers={"X-Request-ID": "client-id-1"}) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == "client-id-1"
        assert response.headers["X-Upstream-Request-ID"] == "req_upstream_1"
        answer = await response.read()
    (line,) = access_lines(buffer)
    assert isinstance(line.pop("timestamp"), str)
    duration = line.pop("duration_ms")
    assert isinstance(duration, float) and duration > 0
    assert line == {
        "event": "request",
        "level": "info",
        "request_id": "client-id-1",
        "method": "POST",
        "route": "/v1/chat/completions",
        "path": "/v1/chat/completions",
        "status": 200,
        "operation": "chat",
        "provider": "fake",
        "model": "plain",
        "stream": False,
        "upstream_status": 200,
        "upstream_request_id": "req_upstream_1",
        "ttft_ms": None,
        "input_tokens": 11,
        "output_tokens": 7,
        "usage_requested": False,
        "bytes_in": len(body),
        "bytes_out": len(answer),
        "error_type": None,
        "retries": 0,
        "client": None,
        "client_disconnected": False,
    }


async def test_stream_line_has_ttft_tokens_and_bytes(setup: Any) -> None:
    _, client, buffer = setup
    async with client.post("/v1/chat/completions", data=orjson.dumps(chat("fake/streamer", stream=True))) as response:
        streamed = await response.read()
    (line,) = access_lines(buffer)
    assert line["stream"] is True and line["usage_requested"] is True
    assert (line["input_tokens"], line["output_tokens"]) == (5, 3)
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert line["bytes_out"] == len(streamed)


async def test_request_id_generated_when_absent_or_insane_and_sent_upstream(setup: Any) -> None:
    fake, client, buffer = setup
    ids = []
    for header in (None, "has space", "x" * 200, "ok.id-1:2/3+4=5@6"):
        headers = {"X-Request-ID": header} if header is not None else {}
        async with client.post("/v1/chat/completions", data=orjson.dumps(chat("fake/plain")), headers=headers) as r:
            assert r.status == 200
            ids.append(r.headers["X-Request-ID"])
            assert fake.last.headers["X-Request-ID"] == r.headers["X-Request-ID"]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids[:3])
    assert len(set(ids[:3])) == 3
    assert ids[3] == "ok.id-1:2/3+4=5@6"
    assert [line["request_id"] for line in access_lines(buffer)] == ids


async def test_request_id_on_streams_errors_and_every_line_of_a_request(setup: Any) -> None:
    fake, client, buffer = setup
    body = orjson.dumps(chat("fake/truncated", stream=True))
    async with client.post("/v1/chat/completions", data=body, headers={"X-Request-ID": "stream-1"}) as response:
        assert response.headers["X-Request-ID"] == "stream-1"
        assert (await read_until_cut(response))[1]
    for path, status in (("/nowhere", 404), ("/proxy/nobody/x", 404)):
        async with client.get(path, headers={"X-Request-ID": f"err-{status}"}) as response:
            assert response.status == status
            assert response.headers["X-Request-ID"] == f"err-{status}"
    async with client.post("/v1/chat/completions", data=orjson.dumps(chat("down/x"))) as response:
        assert response.status == 502
        assert len(response.headers["X-Request-ID"]) == 32
    stream_lines = [line for line in lines(buffer) if line.get("request_id") == "stream-1"]
    # aiohttp's own access line (on in tests only) is written while the request ends, so it carries the id too.
    assert [line["logger"] for line in stream_lines if "logger" in line] == ["aiohttp.access"]
    stream_lines = [line for line in stream_lines if "logger" not in line]
    assert [line["event"] for line in stream_lines] == ["upstream body ended early", "request"]
    assert stream_lines[-1]["error_type"] == "truncated"
    # Nothing outlives its request: a line logged afterwards carries no request id.
    structlog.get_logger("test").info("after")
    assert "request_id" not in lines(buffer)[-1]


async def test_no_key_in_any_log_line_or_error_body(setup: Any) -> None:
    fake, client, buffer = setup
    bodies: list[bytes] = []
    creds = {"Authorization": f"Bearer {CLIENT_KEY}", "X-API-Key": CLIENT_KEY}
    requests = [
        ("POST", "/v1/chat/completions", chat("fake/plain")),
        ("POST", "/v1/chat/completions", chat("fake/unauth")),
        ("POST", "/v1/chat/completions", chat("quiet/fail")),
        ("POST", "/v1/chat/completions", chat("down/x")),
        ("POST", "/v1/chat/completions", chat("fake/slow")),
        ("POST", "/v1/chat/completions", chat("nobody/x")),
        ("GET", f"/proxy/fake/models?key={PROVIDER_KEY}&api_key={CLIENT_KEY}", None),
        ("GET", f"/nowhere?key={CLIENT_KEY}", None),
        ("GET", "/v1/models", None),
    ]
    for method, path, body in requests:
        data = orjson.dumps(body) if body is not None else None
        async with client.request(method, path, data=data, headers=creds) as response:
            bodies.append(await response.read())
    # The client's credentials never reach the provider.
    for seen in fake.requests:
        assert CLIENT_KEY not in str(seen.headers)
    # Anything that logs a secret by mistake is scrubbed: structlog lines and the standard library's alike.
    structlog.get_logger("test").error("careless", detail=f"key was {PROVIDER_KEY}", authorization="Bearer abc")
    logging.getLogger("aiohttp.server").error("careless url http://h/v1?key=%s", OTHER_KEY)
    try:
        raise RuntimeError(f"upstream refused {OTHER_KEY}")
    except RuntimeError:
        structlog.get_logger("test").exception("with traceback")
    output = buffer.getvalue()
    assert len(access_lines(buffer)) == len(requests)
    for secret in (PROVIDER_KEY, OTHER_KEY, CLIENT_KEY):
        assert secret not in output
        for answer in bodies:
            assert secret.encode() not in answer
    assert output.count(REDACTED) >= 4
    assert "careless url http://h/v1?key=[REDACTED]" in output


def test_redactor_scrubs_names_values_tokens_and_query_keys() -> None:
    redactor = Redactor({"sk-known-secret-1234", "short"})
    event = {
        "event": "x sk-known-secret-1234 y",
        "authorization": "Bearer whatever",
        "X_API_Key": "anything",
        "headers": {"Cookie": "a=b", "Accept": "text/plain"},
        "note": "sent Bearer abcdef123456 upstream",
        "url": "https://h/p?alpha=1&api_key=zzz&key=yyy#f",
        "count": 3,
        "nested": [{"token": "t"}, "sk-known-secret-1234"],
        "error": ValueError("bad sk-known-secret-1234"),
    }
    assert redactor(None, "info", event) == {
        "event": f"x {REDACTED} y",
        "authorization": REDACTED,
        "X_API_Key": REDACTED,
        "headers": {"Cookie": REDACTED, "Accept": "text/plain"},
        "note": f"sent Bearer {REDACTED} upstream",
        "url": f"https://h/p?alpha=1&api_key={REDACTED}&key={REDACTED}#f",
        "count": 3,
        "nested": [{"token": REDACTED}, REDACTED],
        "error": f"bad {REDACTED}",
    }
    assert redactor.scrub("short stays") == "short stays"  # too short to be a key: never redacted


def test_secret_values_come_from_the_table_and_credential_named_variables() -> None:
    env = {
        "FAKE_API_KEY": PROVIDER_KEY,
        "QUIET_SECRET_KEY": OTHER_KEY,
        "GATEWAY_CLIENT_KEYS": "first-client-key-1, second-client-key-2",
        "AUTH_OIDC_CLIENT_SECRET": "oidc-secret-value",
        "CUSTOM_CREDS_VAR": "custom-creds-value",
        "SERVER_PORT": "8080",
        "HOME": "/root",
    }
    table = telemetry_table(1, 2)
    found = secret_values(env, table)
    assert {PROVIDER_KEY, OTHER_KEY, "first-client-key-1", "second-client-key-2", "oidc-secret-value"} <= found
    assert "custom-creds-value" not in found and "8080" not in found and "/root" not in found


async def test_development_logs_are_readable_and_bodies_truncated(aiohttp_server: Any, aiohttp_client: Any) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("development", stream=buffer, cache=False)
    try:
        fake = await ChatProvider().start(aiohttp_server)
        app = gateway_app(
            telemetry_settings(environment="development", debug_content_truncate_words=3, debug_max_messages=2),
            telemetry_table(fake.port, free_port()),
        )
        client = await aiohttp_client(app)
        messages = [
            {"role": "system", "content": "alpha beta gamma delta epsilon"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "one two three four"},
                    {"type": "input_audio", "input_audio": {"data": "QUJD"}},
                ],
            },
            {"role": "user", "content": "third message is never shown"},
        ]
        body = {"model": "fake/plain", "messages": messages}
        async with client.post("/v1/chat/completions", data=orjson.dumps(body)) as response:
            assert response.status == 200
    finally:
        structlog.reset_defaults()
        root.handlers, _ = saved
        root.setLevel(saved[1])
    output = buffer.getvalue()
    assert not output.lstrip().startswith("{")  # console lines, not JSON
    request_line = next(line for line in output.splitlines() if "request body" in line)
    assert "alpha beta gamma ..." in request_line and "delta" not in request_line
    assert "one two three ..." in request_line and "four" not in request_line
    assert "never shown" not in request_line and "'messages_omitted': 1" in request_line
    response_line = next(line for line in output.splitlines() if "response body" in line)
    assert "one two three ..." in response_line and "five" not in response_line
    assert "status=200" in next(line for line in output.splitlines() if "] request  " in line)


PROVIDERS = (("served", "bearer"), ("nokey", "bearer"), ("badurl", "bearer"), ("open", "none"))


async def test_start_up_logs_one_line_per_provider_and_no_key(tmp_path: Path) -> None:
    """A real gateway process: JSON lines on stdout, served or not served and why, never a key or URL query."""
    table = tmp_path / "providers.yaml"
    entries = {pid: entry(pid, "http://127.0.0.1:9/v1", auth) for pid, auth in PROVIDERS}
    table.write_text(yaml.safe_dump({"providers": entries}))
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "SERVED_API_KEY": PROVIDER_KEY,
        "BADURL_API_KEY": OTHER_KEY,
        "BADURL_API_URL": f"ftp://127.0.0.1/v1?key={CLIENT_KEY}",
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--providers", str(table), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        output: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not output or output[-1]["event"] != "listening":
                raw = await process.stdout.readline()  # type: ignore[union-attr]
                assert raw, "the gateway exited before listening"
                assert PROVIDER_KEY.encode() not in raw and OTHER_KEY.encode() not in raw
                assert CLIENT_KEY.encode() not in raw
                output.append(orjson.loads(raw))
    finally:
        process.terminate()
        await process.wait()
    providers = {line["provider"]: line for line in output if "provider" in line}
    assert providers["served"]["event"] == "provider served"
    assert providers["served"]["url"] == "http://127.0.0.1:9/v1"
    assert providers["open"]["event"] == "provider served"
    assert providers["nokey"] == {
        "event": "provider not served",
        "level": "warning",
        "provider": "nokey",
        "reason": "missing API key: set NOKEY_API_KEY",
        "timestamp": providers["nokey"]["timestamp"],
    }
    assert providers["badurl"]["event"] == "provider not served"
    assert providers["badurl"]["reason"].startswith("bad URL 'ftp://127.0.0.1/v1?<query hidden>'")
    summary = next(line for line in output if line["event"] == "provider table loaded")
    assert (summary["served"], summary["total"]) == (2, 4)


async def test_client_disconnect_mid_stream_is_logged(setup: Any) -> None:
    fake, client, buffer = setup
    body = orjson.dumps(chat("fake/held", stream=True))
    response = await client.post("/v1/chat/completions", data=body, headers={"X-Request-ID": "gone-1"})
    await fake.holding.wait()
    response.close()  # the client walks away while the provider is still answering
    fake.release.set()
    for _ in range(1000):  # the gateway notices on its next write: wait for its line, at most 10 s
        if any(line.get("request_id") == "gone-1" for line in access_lines(buffer)):
            break
        await asyncio.sleep(0.01)
    (line,) = [line for line in access_lines(buffer) if line["request_id"] == "gone-1"]
    assert line["client_disconnected"] is True
    assert line["stream"] is True and line["provider"] == "fake"


@pytest.mark.parametrize("method", ["POST", f"X{PROVIDER_KEY}"])
def test_the_fast_access_line_is_what_structlog_would_print(
    capture: io.StringIO, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Production's access lines skip structlog's processor chain and scrub only the fields a client or provider
    chose; the line must not change for it, secrets included."""
    assert json_lines() is not None
    exchange = Exchange(operation="proxy", provider="fake", model=f"Bearer {CLIENT_KEY}", upstream_status=200)
    exchange.route = "/proxy/{provider}/{path}"
    exchange.upstream_request_id = f"req-{PROVIDER_KEY}"
    exchange.client_name = f"oidc:{OTHER_KEY}"
    request = make_mocked_request(method, f"/proxy/fake/x/{PROVIDER_KEY}")
    ended = exchange.started + 0.25
    access_log.write(request, exchange, 200, ended)
    monkeypatch.setattr(access_log, "json_lines", lambda: None)  # as in development: through structlog
    access_log.write(request, exchange, 200, ended)
    fast, slow = lines(capture)
    assert fast.pop("timestamp").endswith("Z") and slow.pop("timestamp").endswith("Z")
    assert fast == slow
    assert fast["path"] == f"/proxy/fake/x/{REDACTED}" and fast["model"] == f"Bearer {REDACTED}"
    text = capture.getvalue()
    assert PROVIDER_KEY not in text and CLIENT_KEY not in text and OTHER_KEY not in text
    with structlog.testing.capture_logs():
        assert json_lines() is None  # structlog configured since: lines go through it (and are captured)


def test_a_remembered_scrub_is_forgotten_when_the_secrets_change() -> None:
    """The scrub memo (same texts on every access line) must never hand back text scrubbed for old secrets."""
    redactor = Redactor()
    text = "model-sk-rotated-abcdefgh123"
    assert redactor.scrub(text) == text  # remembered as harmless
    redactor.update({"sk-rotated-abcdefgh123"})
    assert redactor.scrub(text) == f"model-{REDACTED}"
