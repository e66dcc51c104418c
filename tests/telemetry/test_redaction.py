"""The gateway's own client keys (`gwk_<id>_<secret>`, made by `keys new`) are scrubbed from any logged text without
being configured: in the access line's path, model, client name, upstream request id and request id, and in
structlog lines; ordinary text is left alone."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import make_mocked_request

from gateway.access.keys import new_key
from gateway.exchange import Exchange
from gateway.telemetry import access_log
from gateway.telemetry.logs import configure_logging, json_lines
from gateway.telemetry.redact import REDACTED, Redactor
from tests.fakes.bodies import chat
from tests.fakes.gateways import gateway_app, telemetry_settings
from tests.fakes.net import free_port
from tests.fakes.providers import ChatProvider
from tests.fakes.tables import telemetry_table

KEY_ID = "5f3a9c0e7b21"
SECRET = "Zm9yLXRlc3RzLW9ubHktbm90LWEtcmVhbC1rZXlfMDE"
KEY = f"gwk_{KEY_ID}_{SECRET}"  # shaped like the keys `keys new` makes
SCRUBBED = f"gwk_{KEY_ID}_{REDACTED}"


def test_keys_made_by_keys_new_are_scrubbed_keeping_their_id() -> None:
    """The redactor knows the format without importing access/: this keeps the two in step."""
    redactor = Redactor()
    for _ in range(100):
        made = new_key()
        secret = made.key.removeprefix(f"gwk_{made.key_id}_")
        assert redactor.scrub(f"/proxy/x/{made.key}") == f"/proxy/x/gwk_{made.key_id}_{REDACTED}"
        assert secret not in redactor.scrub(f"model {made.key}, again {made.key}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KEY, SCRUBBED),
        (f"/proxy/fake/v1/{KEY}/models", f"/proxy/fake/v1/{SCRUBBED}/models"),
        (f"fake/{KEY}", f"fake/{SCRUBBED}"),
        # Already hidden whole as a bearer token or a key-named query value.
        (f"Bearer {KEY}", f"Bearer {REDACTED}"),
        (f"/v1/models?api-key={KEY}&x=1", f"/v1/models?api-key={REDACTED}&x=1"),
        (f"/v1/models?model={KEY}&x=1", f"/v1/models?model={SCRUBBED}&x=1"),
        (f"req-{KEY}.{KEY}", f"req-{SCRUBBED}.{SCRUBBED}"),
        (f"my_{KEY}", f"my_{SCRUBBED}"),
        # A cut key (a log field's length limit, a client's typo) still hides what is left of the secret.
        (f"model={KEY[:30]}", f"model=gwk_{KEY_ID}_{REDACTED}"),
        (KEY.replace(KEY_ID, KEY_ID.upper()), f"gwk_{KEY_ID.upper()}_{REDACTED}"),
    ],
)
def test_client_keys_are_scrubbed_wherever_they_appear(text: str, expected: str) -> None:
    redactor = Redactor()
    assert redactor.scrub(text) == expected
    assert redactor.scrub(text) == expected  # and the remembered answer is the scrubbed one
    assert SECRET[:8] not in redactor.scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "gwk_",
        "the gwk_ prefix marks a client key",
        "gwk_0123456789ab",
        "gwk_0123456789ab_",
        "gwk_0123456789_abcdefghijklmnop",  # a short id: not the gateway's format
        "gwk_0123456789xy_abcdefghijklmnop",  # not hex
        "gwk-0123456789ab-abcdefghijklmnop",
        "/v1/chat/completions",
        "llama-3.1-70b-instruct_q4_0123456789ab",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().scrub(text) == text


def test_a_configured_client_key_is_still_scrubbed_whole() -> None:
    redactor = Redactor({KEY})
    assert redactor.scrub(f"path /x/{KEY}") == f"path /x/{REDACTED}"


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """Production logging (no configured secrets) into a buffer, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("production", stream=buffer, cache=False)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers, _ = saved
    root.setLevel(saved[1])


@pytest.mark.parametrize("fast", [True, False], ids=["json-lines", "structlog"])
def test_the_access_line_scrubs_client_keys_in_every_chosen_field(
    capture: io.StringIO, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    if fast:
        assert json_lines() is not None
    else:
        monkeypatch.setattr(access_log, "json_lines", lambda: None)  # as in development: through structlog
    exchange = Exchange(operation="proxy", provider="fake", model=f"fake/{KEY}", upstream_status=200)
    exchange.route = "/proxy/{provider}/{path}"
    exchange.upstream_request_id = f"req-{KEY}"
    exchange.client_name = f"oidc:{KEY}"
    structlog.contextvars.bind_contextvars(request_id=KEY)
    request = make_mocked_request("GET", f"/proxy/fake/{KEY}/models")
    access_log.write(request, exchange, 200, exchange.started + 0.1)
    structlog.get_logger("test").warning(f"refused {KEY}", detail={"sent": [KEY]})
    text = capture.getvalue()
    assert SECRET not in text and KEY not in text
    access, warning = (orjson.loads(line) for line in text.splitlines())
    assert access["path"] == f"/proxy/fake/{SCRUBBED}/models"
    assert access["model"] == f"fake/{SCRUBBED}"
    assert access["client"] == f"oidc:{SCRUBBED}"
    assert access["upstream_request_id"] == f"req-{SCRUBBED}"
    assert access["request_id"] == SCRUBBED == warning["request_id"]
    assert warning["event"] == f"refused {SCRUBBED}" and warning["detail"] == {"sent": [SCRUBBED]}


def test_a_standard_library_line_is_scrubbed(capture: io.StringIO) -> None:
    logging.getLogger("aiohttp.server").error("bad request line GET /x/%s HTTP/1.1", KEY)
    line: dict[str, Any] = orjson.loads(capture.getvalue())
    assert line["event"] == f"bad request line GET /x/{SCRUBBED} HTTP/1.1"


async def test_a_gateway_logs_no_client_key_sent_in_the_path_or_the_model(
    aiohttp_server: Any, aiohttp_client: Any, capture: io.StringIO
) -> None:
    fake = await ChatProvider().start(aiohttp_server)
    client = await aiohttp_client(gateway_app(telemetry_settings(), telemetry_table(fake.port, free_port())))
    async with client.post("/v1/chat/completions", data=orjson.dumps(chat(f"fake/{KEY}"))) as response:
        await response.read()
    async with client.get(f"/proxy/fake/{KEY}/models", headers={"X-Request-ID": KEY}) as response:
        await response.read()
    text = capture.getvalue()
    assert SECRET not in text
    requests = [line for line in map(orjson.loads, text.splitlines()) if line["event"] == "request"]
    assert [(line["path"], line["model"]) for line in requests] == [
        ("/v1/chat/completions", SCRUBBED),
        (f"/proxy/fake/{SCRUBBED}/models", None),
    ]
