"""The Inference API's dialect (seed 001, `/api/v1/inference/*`): camelCase requests translated into the OpenAI
shapes providers serve, and their answers back into the envelope `{"success": true, "data": ...}` (errors:
`{"success": false, "error": {"code", "message"}}`), whole or as the API's stream events. Pure translators.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from gateway.config.providers import Provider
from gateway.dialects.base import Dialect
from gateway.dialects.openai import ModelRequest, parse_object
from gateway.errors import InvalidRequest
from gateway.upstream.scrub import query_secret, scrub

JSON = "application/json"
EVENT_STREAM = "text/event-stream"

# The envelope's code for each status the gateway answers with (docs/api.md lists them with their causes).
CODES: Mapping[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    402: "PAYMENT_REQUIRED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "UPSTREAM_ERROR",
    503: "SERVICE_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}


def code(status: int) -> str:
    if status in CODES:
        return CODES[status]
    return "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"


def failure(status: int, message: str) -> bytes:
    return orjson.dumps({"success": False, "error": {"code": code(status), "message": message}})


def success(data: Any) -> bytes:
    return orjson.dumps({"success": True, "data": data})


def error_body(status: int, message: str, type_: str, code_: str | None) -> bytes:
    # The gateway's own type and fine code have no place in the envelope; the status picks its code.
    return failure(status, message)


DIALECT = Dialect("envelope", error_body)


# --- requests: the API's camelCase bodies -> OpenAI's ---------------------------------------------------------


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 1


def _integer(value: Any) -> bool:
    return type(value) is int


def _stops(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _object(value: Any) -> bool:
    return type(value) is dict


def _string(value: Any) -> bool:
    return isinstance(value, str)


class Field(NamedTuple):
    """An optional field renamed on its way to the provider, checked for its type first."""

    name: str  # OpenAI's name
    check: Callable[[Any], bool]
    expects: str  # what the check wants, for the error message


_PROVIDER = ("provider", "providerId")

CHAT_FIELDS: Mapping[str, Field] = {
    "maxTokens": Field("max_tokens", _count, "a positive integer"),
    "temperature": Field("temperature", _number, "a number"),
    "topP": Field("top_p", _number, "a number"),
    "stop": Field("stop", _stops, "a string or an array of strings"),
    "seed": Field("seed", _integer, "an integer"),
    "user": Field("user", _string, "a string"),
    "presencePenalty": Field("presence_penalty", _number, "a number"),
    "frequencyPenalty": Field("frequency_penalty", _number, "a number"),
    "responseFormat": Field("response_format", _object, "an object"),
}
# Fields with a translation of their own (or none: they route the request).
CHAT_OWN = ("model", "messages", "system", "tools", "toolChoice", "stream", *_PROVIDER)

EMBED_FIELDS: Mapping[str, Field] = {
    "dimensions": Field("dimensions", _count, "a positive integer"),
    "user": Field("user", _string, "a string"),
}
EMBED_OWN = ("model", "input", *_PROVIDER)

IMAGE_FIELDS: Mapping[str, Field] = {
    "size": Field("size", _string, "a string"),
    "n": Field("n", _count, "a positive integer"),
    "quality": Field("quality", _string, "a string"),
    "style": Field("style", _string, "a string"),
    "background": Field("background", _string, "a string"),
    "outputFormat": Field("output_format", _string, "a string"),
    "responseFormat": Field("response_format", _string, "a string"),
    "user": Field("user", _string, "a string"),
}
IMAGE_OWN = ("model", "prompt", *_PROVIDER)

TRANSCRIBE_FIELDS: Mapping[str, Field] = {
    "language": Field("language", _string, "a string"),
    "prompt": Field("prompt", _string, "a string"),
    "temperature": Field("temperature", _number, "a number"),
}
TRANSCRIBE_OWN = ("model", "audio", "filename", *_PROVIDER)

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "toolCalls", "toolCallId"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})


def parse_chat(raw: bytes) -> ModelRequest:
    """`POST /chat`: the API's chat body as an OpenAI chat completion request."""
    return _chat(raw, stream=False)


def parse_chat_stream(raw: bytes) -> ModelRequest:
    """`POST /chat/stream`: the same body, streamed."""
    return _chat(raw, stream=True)


def parse_embed(raw: bytes) -> ModelRequest:
    """`POST /embed`: `{model, input, dimensions?}` as an OpenAI embeddings request."""
    body = parse_object(raw)
    model, provider = _routing(body, EMBED_OWN, EMBED_FIELDS)
    text = body.get("input")
    if not (_text(text) or (isinstance(text, list) and text and all(isinstance(t, str) for t in text))):
        raise InvalidRequest("input is required: a string or a non-empty array of strings")
    out: dict[str, Any] = {"model": model, "input": text}
    _renamed(body, EMBED_FIELDS, out)
    return ModelRequest(out, model, False, provider)


def parse_images(raw: bytes) -> ModelRequest:
    """`POST /images`: `{model, prompt, size?, n?, ...}` as an OpenAI image generation request."""
    body = parse_object(raw)
    model, provider = _routing(body, IMAGE_OWN, IMAGE_FIELDS)
    prompt = body.get("prompt")
    if not _text(prompt):
        raise InvalidRequest("prompt is required and must be a non-empty string")
    out: dict[str, Any] = {"model": model, "prompt": prompt}
    _renamed(body, IMAGE_FIELDS, out)
    return ModelRequest(out, model, False, provider)


def parse_transcribe(raw: bytes) -> ModelRequest:
    """`POST /transcribe` with JSON: `{model, audio, language?, prompt?, temperature?, filename?}`, `audio` the
    recording in base64; `transcription_form` writes it as the provider's multipart upload."""
    body = parse_object(raw)
    model, provider = _routing(body, TRANSCRIBE_OWN, TRANSCRIBE_FIELDS)
    audio = body.get("audio")
    if not isinstance(audio, str) or not audio:
        raise InvalidRequest("audio is required: the recording, base64-encoded")
    try:
        binascii.a2b_base64(audio, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("audio must be base64 (RFC 4648, with its padding)") from None
    filename = body.get("filename")
    if filename is not None and not (isinstance(filename, str) and _FILENAME.fullmatch(filename)):
        raise InvalidRequest("filename must be a plain file name (letters, digits, '.', '_', '-'), e.g. talk.mp3")
    out: dict[str, Any] = {"model": model}
    _renamed(body, TRANSCRIBE_FIELDS, out)
    out["audio"] = audio
    if filename is not None:
        out["filename"] = filename
    return ModelRequest(out, model, False, provider)


_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The format of a recording by its first bytes: the provider reads the format from the file name's extension.
_FORMATS = (
    (b"ID3", "mp3"),
    (b"\xff\xfb", "mp3"),
    (b"\xff\xf3", "mp3"),
    (b"\xff\xf2", "mp3"),
    (b"OggS", "ogg"),
    (b"fLaC", "flac"),
    (b"\x1aE\xdf\xa3", "webm"),
)


def _format(audio: bytes) -> str:
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
        return "wav"
    if audio[4:8] == b"ftyp":
        return "m4a"
    for magic, name in _FORMATS:
        if audio.startswith(magic):
            return name
    return "mp3"  # unknown: the provider says so if it cannot read it


def transcription_form(body: dict[str, Any], model: str) -> tuple[bytes, bytes]:
    """The JSON request as the multipart form a transcription endpoint takes: the fields, `response_format=json`
    (the answer is translated), then the recording as `file`, named `filename` or `audio.<format>` by its first
    bytes. The boundary is derived from the form's content, so the same request is the same bytes."""
    audio = binascii.a2b_base64(body["audio"])
    filename = body.get("filename") or f"audio.{_format(audio)}"
    fields = [("model", model)]
    fields += [(name, str(body[name])) for name in ("language", "prompt", "temperature") if name in body]
    fields.append(("response_format", "json"))
    values = [value.encode() for _, value in fields]
    # From everything the form holds: no field can be written to contain it (a part smuggled in).
    digest = hashlib.sha256(audio)
    for value in values:
        digest.update(b"\0" + value)
    boundary = b"gateway-" + digest.hexdigest()[:40].encode()
    if boundary in audio or any(boundary in value for value in values):
        raise InvalidRequest("the recording cannot be sent as a form")  # a 160-bit collision: never in practice
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name.encode(), value)
        for (name, _), value in zip(fields, values, strict=True)
    ]
    parts.append(
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" % (boundary, filename.encode())
    )
    form = b"".join(parts) + audio + b"\r\n--%s--\r\n" % boundary
    return form, b"multipart/form-data; boundary=" + boundary


def _chat(raw: bytes, *, stream: bool) -> ModelRequest:
    body = parse_object(raw)
    model, provider = _routing(body, CHAT_OWN, CHAT_FIELDS)
    asked = body.get("stream")
    if asked is not None and asked is not stream:
        other = "/chat/stream" if asked is True else "/chat"
        raise InvalidRequest(f"stream must be {str(stream).lower()} here (or left out); use {other}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages is required and must be a non-empty array")
    translated = [_message(m, n) for n, m in enumerate(messages)]
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise InvalidRequest("system must be a string")
        translated.insert(0, {"role": "system", "content": system})
    out: dict[str, Any] = {"model": model, "messages": translated}
    if stream:
        out["stream"] = True
    _renamed(body, CHAT_FIELDS, out)
    if "tools" in body:
        out["tools"] = _tools(body["tools"])
    if "toolChoice" in body:
        out["tool_choice"] = _tool_choice(body["toolChoice"])
    return ModelRequest(out, model, stream, provider)


def _routing(body: dict[str, Any], own: Iterable[str], fields: Mapping[str, Field]) -> tuple[str, str | None]:
    """The model and the provider asked for, once every field is known to be one the route takes."""
    unknown = [key for key in body if key not in fields and key not in own]
    if unknown:
        known = ", ".join(sorted((*own, *fields)))
        raise InvalidRequest(f"unknown field {unknown[0]!r}; this route takes: {known}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model is required")
    if "provider" in body and "providerId" in body:
        raise InvalidRequest("send provider or providerId, not both")
    provider = body.get("provider", body.get("providerId"))
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise InvalidRequest("provider must be a non-empty string")
    return model, provider


def _renamed(body: dict[str, Any], fields: Mapping[str, Field], out: dict[str, Any]) -> None:
    for key, field in fields.items():
        if key in body:
            value = body[key]
            if not field.check(value):
                raise InvalidRequest(f"{key} must be {field.expects}")
            out[field.name] = value


def _message(message: Any, n: int) -> dict[str, Any]:
    where = f"messages[{n}]"
    if type(message) is not dict:
        raise InvalidRequest(f"{where} must be an object")
    unknown = [key for key in message if key not in _MESSAGE_KEYS]
    if unknown:
        takes = ", ".join(sorted(_MESSAGE_KEYS))
        raise InvalidRequest(f"{where}: unknown field {unknown[0]!r}; a message takes: {takes}")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequest(f"{where}.role must be one of: {', '.join(sorted(_ROLES))}")
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    calls = message.get("toolCalls")
    if isinstance(content, str) or (isinstance(content, list) and content and all(type(p) is dict for p in content)):
        out["content"] = content
    elif content is None and role == "assistant" and calls:
        out["content"] = None
    else:
        raise InvalidRequest(f"{where}.content must be a string or an array of content parts")
    if "name" in message:
        if not _text(message["name"]):
            raise InvalidRequest(f"{where}.name must be a non-empty string")
        out["name"] = message["name"]
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list) or not calls:
            raise InvalidRequest(f"{where}.toolCalls: a non-empty array, on an assistant message only")
        out["tool_calls"] = [_tool_call(call, f"{where}.toolCalls[{i}]") for i, call in enumerate(calls)]
    call_id = message.get("toolCallId")
    if role == "tool" or call_id is not None:
        if role != "tool" or not _text(call_id):
            raise InvalidRequest(f"{where}: a tool message needs toolCallId (a non-empty string), and only it has one")
        out["tool_call_id"] = call_id
    return out


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if type(call) is not dict or not _text(call.get("id")) or not _text(call.get("name")):
        raise InvalidRequest(f"{where} must be an object with id, name and arguments")
    arguments = call.get("arguments", "{}")
    if type(arguments) is dict:
        arguments = orjson.dumps(arguments).decode()
    elif not isinstance(arguments, str):
        raise InvalidRequest(f"{where}.arguments must be a JSON string or an object")
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": arguments}}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest("tools must be a non-empty array")
    out = []
    for n, tool in enumerate(tools):
        if type(tool) is not dict or not _text(tool.get("name")):
            raise InvalidRequest(f"tools[{n}] must be an object with a name (and description, parameters)")
        unknown = [key for key in tool if key not in ("name", "description", "parameters")]
        if unknown:
            raise InvalidRequest(
                f"tools[{n}]: unknown field {unknown[0]!r}; a tool takes description, name, parameters"
            )
        if "description" in tool and not isinstance(tool["description"], str):
            raise InvalidRequest(f"tools[{n}].description must be a string")
        if "parameters" in tool and type(tool["parameters"]) is not dict:
            raise InvalidRequest(f"tools[{n}].parameters must be a JSON Schema object")
        out.append({"type": "function", "function": tool})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return choice
    if type(choice) is dict and set(choice) == {"name"} and _text(choice["name"]):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest('toolChoice must be "auto", "none", "required" or {"name": "<a tool>"}')


# --- answers: OpenAI's -> the envelope ------------------------------------------------------------------------


class Unreadable(Exception):
    """A 2xx answer that is not the shape its endpoint promises."""


def _usage(value: Any) -> dict[str, int] | None:
    """OpenAI's usage (prompt/completion tokens, or input/output tokens as the image endpoint reports them)."""
    if type(value) is not dict:
        return None
    given = value.get("prompt_tokens", value.get("input_tokens"))
    taken = value.get("completion_tokens", value.get("output_tokens", 0))
    if type(given) is int and type(taken) is int:
        return {"inputTokens": given, "outputTokens": taken}
    return None


def _first_choice(answer: dict[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or type(choices[0]) is not dict:
        raise Unreadable("the provider's chat answer has no choices")
    choice: dict[str, Any] = choices[0]
    return choice


def _calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if type(call) is dict else None
        if type(function) is dict:
            out.append({"id": call.get("id"), "name": function.get("name"), "arguments": function.get("arguments")})
    return out


def chat_data(answer: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    choice = _first_choice(answer)
    message = choice.get("message")
    if type(message) is not dict:
        raise Unreadable("the provider's chat answer has no message")
    content = message.get("content")
    return {
        "content": content if isinstance(content, str) else "",
        "model": answer.get("model") if _text(answer.get("model")) else model,
        "provider": provider,
        "finishReason": choice.get("finish_reason"),
        "toolCalls": _calls(message.get("tool_calls")),
        "usage": _usage(answer.get("usage")),
    }


def transcription_data(answer: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    text = answer.get("text")
    if not isinstance(text, str):
        raise Unreadable("the provider's transcription has no text")
    return {"text": text, "model": model, "provider": provider, "usage": _usage(answer.get("usage"))}


def embed_data(answer: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    items = answer.get("data")
    if not isinstance(items, list) or not all(type(i) is dict and "embedding" in i for i in items):
        raise Unreadable("the provider's embeddings answer has no data")
    ordered = sorted(items, key=lambda item: item.get("index", 0))
    return {
        "embeddings": [item["embedding"] for item in ordered],
        "model": answer.get("model") if _text(answer.get("model")) else model,
        "provider": provider,
        "usage": _usage(answer.get("usage")),
    }


_IMAGE_KEYS = {"url": "url", "b64_json": "b64Json", "revised_prompt": "revisedPrompt"}


def images_data(answer: dict[str, Any], model: str, provider: str) -> dict[str, Any]:
    items = answer.get("data")
    if not isinstance(items, list) or not all(type(i) is dict for i in items):
        raise Unreadable("the provider's images answer has no data")
    images = [{_IMAGE_KEYS[k]: v for k, v in item.items() if k in _IMAGE_KEYS} for item in items]
    return {"images": images, "model": model, "provider": provider, "usage": _usage(answer.get("usage"))}


Shape = Callable[[dict[str, Any], str, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's answer translator (`upstream.call.Translate`): the provider's answer into the envelope, or,
    for the stream route, into the API's events. `secrets` are the provider's key, kept out of any message."""

    shape: Shape
    model: str  # the name the provider received
    provider: str
    secrets: tuple[bytes, ...] = ()
    events: bool = False

    def whole(self, status: int, body: bytes) -> tuple[int, str, bytes]:
        if not 200 <= status < 300:
            return provider_failure(status, body, self.provider, self.secrets)
        try:
            answer = orjson.loads(body)
            if type(answer) is not dict:
                raise Unreadable("the provider's answer is not a JSON object")
            data = self.shape(answer, self.model, self.provider)
        except (orjson.JSONDecodeError, Unreadable) as exc:
            message = str(exc) if isinstance(exc, Unreadable) else "the provider's answer is not JSON"
            return 502, JSON, failure(502, f"provider {self.provider!r}: {message}")
        if self.events:
            # A provider that answered a stream request whole: the same events, in one piece.
            return 200, EVENT_STREAM, _whole_events(data)
        return 200, JSON, success(data)

    def stream(self) -> ChatEvents:
        return ChatEvents(self.secrets)


def answer_for(shape: Shape, *, events: bool = False) -> Callable[[Provider, str], Answer]:
    """The translator maker a route hands to the inference handler: (provider, model it receives) -> Answer."""

    def make(provider: Provider, model: str) -> Answer:
        return Answer(shape, model, provider.id, provider_secrets(provider), events)

    return make


def provider_secrets(provider: Provider) -> tuple[bytes, ...]:
    """The provider's key as it may be echoed: from its auth header (without `Bearer `) or its URL query."""
    found: list[bytes] = []
    for name, value in provider.headers:
        if provider.secret_header is not None and name.lower() == provider.secret_header.encode():
            key = value.removeprefix(b"Bearer ").strip()
            if key:
                found.append(key)
    in_query = query_secret(provider)
    if in_query:
        found.append(in_query)
    return tuple(found)


def _scrubbed(message: str, secrets: tuple[bytes, ...]) -> str:
    data = message.encode()
    for secret in secrets:
        data = scrub(data, secret)
    return data.decode("utf-8", "replace")


# A provider's message is cut at this length: an HTML error page is not a message.
MESSAGE_MAX = 500


def provider_message(body: bytes) -> str | None:
    """The message of a provider's error answer: OpenAI's `error.message`, `error` as a string, `message` or
    `detail`, the first of a list of such (Google's); else its text, when it is short text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:MESSAGE_MAX] if text and not text.startswith("<") else None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if type(parsed) is not dict:
        return None
    error = parsed.get("error")
    if type(error) is dict and isinstance(error.get("message"), str):
        return str(error["message"])[:MESSAGE_MAX]
    for value in (error, parsed.get("message"), parsed.get("detail")):
        if isinstance(value, str) and value:
            return value[:MESSAGE_MAX]
    return None


def provider_failure(status: int, body: bytes, provider: str, secrets: tuple[bytes, ...]) -> tuple[int, str, bytes]:
    """A provider's error answer in the envelope. What the provider says about the request (4xx) keeps its status;
    its refusal of the gateway's own credentials or account (401, 402, 403, 407) and its failures (5xx, and anything
    not an error status) are the gateway's 502 UPSTREAM_ERROR: the client's request and credentials were fine."""
    said = provider_message(body)
    if status in (401, 407):
        # Its message may quote the key (even masked): not repeated.
        said = None
    message = f"provider {provider!r} answered {status}" + (f": {_scrubbed(said, secrets)}" if said else "")
    client_status = 502 if status in (401, 402, 403, 407) or not 400 <= status < 500 else status
    return client_status, JSON, failure(client_status, message)


# --- the stream: OpenAI chat chunks -> the API's events -------------------------------------------------------


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _stop(finish: Any, usage: dict[str, int] | None) -> bytes:
    return _event({"type": "message_stop", "finishReason": finish, "usage": usage})


def _whole_events(data: dict[str, Any]) -> bytes:
    out = []
    if data["content"]:
        out.append(_event({"type": "content_block_delta", "delta": {"text": data["content"]}}))
    for index, call in enumerate(data["toolCalls"]):
        out.append(_event({"type": "tool_call_delta", "delta": {"index": index, **call}}))
    out.append(_stop(data["finishReason"], data["usage"]))
    return b"".join(out)


class ChatEvents:
    """The edit (`upstream.call.StreamEdit`) that rewrites an OpenAI chat stream into the API's events as it passes:
    each text delta a `content_block_delta`, each tool-call delta a `tool_call_delta`, an error event an `error`,
    and at `[DONE]` (or at a clean end without it) one `message_stop` with the finish reason and the usage of the
    provider's usage chunk. Only an unfinished line is held between reads."""

    __slots__ = ("_data", "_finish", "_pending", "_secrets", "_stopped", "_usage")

    def __init__(self, secrets: tuple[bytes, ...] = ()) -> None:
        self._pending = b""
        self._data: list[bytes] = []  # the data lines of the event being read
        self._finish: Any = None
        self._usage: dict[str, int] | None = None
        self._stopped = False
        self._secrets = secrets

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return b""
        self._pending = data[cut + 1 :]
        out: list[bytes] = []
        for line in data[:cut].split(b"\n"):
            self._line(line.removesuffix(b"\r"), out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._pending:
            self._line(self._pending.removesuffix(b"\r"), out)
            self._pending = b""
        self._line(b"", out)
        if not self._stopped:
            self._stopped = True
            out.append(_stop(self._finish, self._usage))
        return b"".join(out)

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif not line and self._data:
            payload = b"\n".join(self._data)
            self._data = []
            self._dispatch(payload, out)

    def _dispatch(self, payload: bytes, out: list[bytes]) -> None:
        if self._stopped:
            return
        if payload.strip() == b"[DONE]":
            self._stopped = True
            out.append(_stop(self._finish, self._usage))
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            out.append(_stream_error("the provider sent an event that is not JSON"))
            return
        if type(chunk) is not dict:
            return
        if "error" in chunk:
            said = provider_message(payload) or "the provider reported an error mid-stream"
            out.append(_stream_error(_scrubbed(said, self._secrets)))
            return
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or type(choices[0]) is not dict:
            return
        choice = choices[0]
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if type(delta) is not dict:
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            out.append(_event({"type": "content_block_delta", "delta": {"text": text}}))
        for call in delta.get("tool_calls") or ():
            if type(call) is dict:
                out.append(_event({"type": "tool_call_delta", "delta": _call_delta(call)}))


def _call_delta(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    delta: dict[str, Any] = {"index": call.get("index", 0)}
    if call.get("id") is not None:
        delta["id"] = call["id"]
    if type(function) is dict:
        for key in ("name", "arguments"):
            if function.get(key) is not None:
                delta[key] = function[key]
    return delta


def _stream_error(message: str) -> bytes:
    return _event({"type": "error", "error": {"code": "UPSTREAM_ERROR", "message": message}})
