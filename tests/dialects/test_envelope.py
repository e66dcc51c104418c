"""The Inference API's dialect as pure functions: its error codes, the stream rewritten event by event however the
provider's bytes are cut, and the provider's error messages it keeps (without the key)."""

from __future__ import annotations

import orjson
import pytest

from gateway.dialects import envelope
from gateway.errors import InvalidRequest
from tests.fakes.bodies import chunk

SECRET = b"sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "BAD_REQUEST"),
        (401, "UNAUTHORIZED"),
        (402, "PAYMENT_REQUIRED"),
        (403, "FORBIDDEN"),
        (404, "NOT_FOUND"),
        (405, "METHOD_NOT_ALLOWED"),
        (408, "REQUEST_TIMEOUT"),
        (409, "CONFLICT"),
        (413, "PAYLOAD_TOO_LARGE"),
        (418, "BAD_REQUEST"),
        (429, "RATE_LIMITED"),
        (500, "INTERNAL_ERROR"),
        (502, "UPSTREAM_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
        (504, "UPSTREAM_TIMEOUT"),
        (599, "INTERNAL_ERROR"),
    ],
)
def test_each_status_has_its_code(status: int, code: str) -> None:
    body = envelope.error_body(status, "what went wrong", "gateway_type", "gateway_code")
    assert orjson.loads(body) == {"success": False, "error": {"code": code, "message": "what went wrong"}}


STREAM = (
    chunk({"role": "assistant", "content": ""})
    + chunk({"content": "Hel"})
    + b": comment\n\n"
    + chunk({"content": "lo \u00e9"})
    + chunk({}, "stop")
    + b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}\n\n'
    + b"data: [DONE]\n\n"
)
EXPECTED = (
    b'data: {"type":"content_block_delta","delta":{"text":"Hel"}}\n\n'
    b'data: {"type":"content_block_delta","delta":{"text":"lo \xc3\xa9"}}\n\n'
    b'data: {"type":"message_stop","finishReason":"stop","usage":{"inputTokens":10,"outputTokens":5}}\n\n'
)


def test_the_stream_is_the_same_however_it_is_cut() -> None:
    for cut in range(len(STREAM) + 1):
        edit = envelope.ChatEvents()
        out = edit.feed(STREAM[:cut]) + edit.feed(STREAM[cut:]) + edit.finish()
        assert out == EXPECTED, cut
    edit = envelope.ChatEvents()
    assert b"".join(edit.feed(STREAM[n : n + 1]) for n in range(len(STREAM))) + edit.finish() == EXPECTED


def test_each_event_goes_out_as_soon_as_its_end_arrives() -> None:
    edit = envelope.ChatEvents()
    assert edit.feed(chunk({"content": "a"})[:-1]) == b""  # the blank line that ends it is still to come
    assert edit.feed(b"\n") == b'data: {"type":"content_block_delta","delta":{"text":"a"}}\n\n'


def test_crlf_framing_multi_line_data_and_a_stream_without_done() -> None:
    edit = envelope.ChatEvents()
    out = edit.feed(b'data: {"choices":[{"index":0,\r\ndata: "delta":{"content":"x"}}]}\r\n\r\n')
    assert out == b'data: {"type":"content_block_delta","delta":{"text":"x"}}\n\n'
    # Ended cleanly without [DONE] (and without the last blank line): message_stop all the same.
    assert edit.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}') == b""
    assert edit.finish() == b'data: {"type":"message_stop","finishReason":"length","usage":null}\n\n'


def test_nothing_after_done_and_errors_in_the_stream() -> None:
    edit = envelope.ChatEvents((SECRET,))
    out = edit.feed(b"data: {oops\n\n")
    out += edit.feed(b'data: {"error":{"message":"bad key ' + SECRET + b'"}}\n\n')
    out += edit.feed(b"data: [DONE]\n\n" + chunk({"content": "late"}))
    out += edit.finish()
    assert out == (
        b'data: {"type":"error","error":{"code":"UPSTREAM_ERROR",'
        b'"message":"the provider sent an event that is not JSON"}}\n\n'
        b'data: {"type":"error","error":{"code":"UPSTREAM_ERROR","message":"bad key [REDACTED]"}}\n\n'
        b'data: {"type":"message_stop","finishReason":null,"usage":null}\n\n'
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"m1","type":"t"}}', "m1"),
        (b'{"error":"m2"}', "m2"),
        (b'{"message":"m3"}', "m3"),
        (b'{"detail":"m4"}', "m4"),
        (b'[{"error":{"message":"m5"}}]', "m5"),
        (b"plain text", "plain text"),
        (b"<html>a page</html>", None),
        (b'{"error":{"code":1}}', None),
        (b"", None),
        (b"x" * 600, "x" * 500),
    ],
)
def test_the_providers_message(body: bytes, message: str | None) -> None:
    assert envelope.provider_message(body) == message


def test_a_provider_refusing_the_gateways_key_is_an_upstream_error_without_its_message() -> None:
    status, content_type, body = envelope.provider_failure(
        401, b'{"error":{"message":"Incorrect API key provided: sk-live-****cdef"}}', "openai", (SECRET,)
    )
    assert (status, content_type) == (502, "application/json")
    assert orjson.loads(body) == {
        "success": False,
        "error": {"code": "UPSTREAM_ERROR", "message": "provider 'openai' answered 401"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}', "unknown field 'n'"),
        (b'{"model":"m","messages":[{"role":"user","content":"x","extra":1}]}', "messages[0]: unknown field 'extra'"),
        (b'{"model":"m","messages":[{"role":"user","content":5}]}', "messages[0].content must be"),
        (b'{"model":"m","messages":[{"role":"user","content":"x","toolCalls":[]}]}', "messages[0].toolCalls"),
        (b'{"model":"m","messages":[{"role":"tool","content":"x"}]}', "messages[0]: a tool message needs toolCallId"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"provider":"a","providerId":"b"}', "send provider"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"provider":""}', "provider must be"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","x":1}]}', "tools[0]: unknown"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"system":[]}', "system must be a string"),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}', "temperature must be"),
    ],
)
def test_chat_requests_refused_with_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        envelope.parse_chat(body)
    assert caught.value.message.startswith(message), caught.value.message


def test_provider_id_is_the_seeds_other_name_for_provider() -> None:
    request = envelope.parse_chat_stream(b'{"model":"m","messages":[{"role":"user","content":"x"}],"providerId":"p"}')
    assert (request.model, request.stream, request.provider) == ("m", True, "p")
    assert request.body == {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
