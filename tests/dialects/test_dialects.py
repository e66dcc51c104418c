"""The dialects' pure translators: error envelopes as each family of SDKs reads them, and the request shapes the
OpenAI dialect checks."""

from __future__ import annotations

import orjson
import pytest

from gateway.dialects import DEFAULT, DIALECTS, anthropic, openai
from gateway.errors import InvalidRequest


def test_the_registry_names_each_dialect_once() -> None:
    assert set(DIALECTS) == {"openai", "anthropic", "envelope"}
    assert DEFAULT is DIALECTS["openai"]


def test_openai_errors_carry_message_type_and_code() -> None:
    body = openai.error_body(404, "no such model", "no_provider", "no_provider")
    assert orjson.loads(body) == {"error": {"message": "no such model", "type": "no_provider", "code": "no_provider"}}


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_errors_take_their_type_from_the_status(status: int, type_: str) -> None:
    body = anthropic.error_body(status, "what went wrong", "gateway_type", "gateway_code")
    assert orjson.loads(body) == {"type": "error", "error": {"type": type_, "message": "what went wrong"}}


def test_a_model_request_needs_only_a_model_and_a_chat_needs_messages() -> None:
    request = openai.parse_model_request(b'{"model": "m", "input": "x", "stream": null, "provider": "p"}')
    assert (request.model, request.stream, request.provider) == ("m", False, "p")
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat(b'{"model": "m", "input": "x"}')
    assert caught.value.code == "invalid_messages"
    # The order of the checks: the model is named first, then the messages, then the options.
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat(b'{"model": 1, "stream": "yes"}')
    assert caught.value.code == "invalid_model"
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat(b'{"model": "m", "messages": [{}], "stream": "yes"}')
    assert caught.value.code == "invalid_stream"


USAGE_EVENT = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'
TEXT_EVENT = b'data: {"choices":[{"delta":{"content":"usage"}}]}'


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_the_usage_strip_drops_only_the_usage_chunk_whatever_the_reads(newline: bytes) -> None:
    blank = newline * 2
    stream = TEXT_EVENT + blank + USAGE_EVENT + blank + b"data: [DONE]" + blank
    wanted = TEXT_EVENT + blank + b"data: [DONE]" + blank
    for size in (1, 7, 64, len(stream)):
        strip = openai.UsageChunkStrip()
        out = b"".join(strip.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + strip.finish()
        assert out == wanted, size


def test_the_usage_strip_passes_other_bytes_at_once_and_an_unfinished_event_at_the_end() -> None:
    strip = openai.UsageChunkStrip()
    plain = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert strip.feed(plain) is plain  # nothing held, nothing copied
    assert strip.feed(USAGE_EVENT[:20]) == b""
    assert strip.finish() == USAGE_EVENT[:20]  # a stream cut mid-event: what came is sent as it came


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"o1-pro","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}],'
        b'"messages":[{"role":"user","content":"hi"}]}',
        # An image hidden in a part whose first `type` says text: found by the exact check.
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","type":"text","text":"t",'
        b'"image_url":{"url":"x"}}]}]}',
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"stream" : true}',
    ],
    ids=["model", "messages", "part-type", "stream"],
)
def test_a_body_that_repeats_a_key_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat(raw)
    assert (caught.value.status, caught.value.code) == (400, "duplicate_key")


def test_ordinary_bodies_pass_even_when_they_mention_the_keys_in_text() -> None:
    raw = (
        b'{"model": "m", "messages": [{"role": "user", "content": "write \\"model\\": 1 and \\"image\\""}, '
        b'{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": '
        b'{"url": "data:,"}}]}], "tools": [{"type": "function", "function": {"name": "f", "parameters": '
        b'{"type": "object", "properties": {"model": {"type": "string"}}}}}]}'
    )
    assert openai.parse_chat(raw).model == "m"


def test_a_messages_request_is_routed_by_its_model() -> None:
    parsed = anthropic.parse_messages(b'{"model":"claude-x","max_tokens":5,"stream":true,"messages":[{"role":"user"}]}')
    assert (parsed.model, parsed.stream, parsed.provider) == ("claude-x", True, None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"messages":[{}]}', "'model' is required and must be a non-empty string"),
        (b'{"model":"m"}', "'messages' is required and must be a non-empty array"),
        (b'{"model":"m","messages":[]}', "'messages' is required and must be a non-empty array"),
        (b'{"model":"m","messages":["hi"]}', "each entry of 'messages' must be an object"),
        (b'{"model":"m","messages":[{}],"stream":"yes"}', "'stream' must be a boolean"),
        (b"[]", "the request body must be a JSON object"),
    ],
)
def test_a_bad_messages_request_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        anthropic.parse_messages(raw)
    assert refused.value.message == message
