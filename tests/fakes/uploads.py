"""Uploads: multipart bodies built byte for byte, a provider's transcription answers in every response_format
(and as SSE events), and the endpoints entries of the upload routes."""

from __future__ import annotations

import hashlib
import json
from email.parser import BytesParser
from email.policy import default

from aiohttp import web

BOUNDARY = "gw-test-boundary-7d1"
UPLOAD_ENDPOINTS = {
    "images_edits": {"name": "images_edits", "method": "POST", "endpoint": "/images/edits"},
    "images_variations": {"name": "images_variations", "method": "POST", "endpoint": "/images/variations"},
    "audio_transcriptions": {"name": "audio_transcriptions", "method": "POST", "endpoint": "/audio/transcriptions"},
    "audio_translations": {"name": "audio_translations", "method": "POST", "endpoint": "/audio/translations"},
    "audio_speech": {"name": "audio_speech", "method": "POST", "endpoint": "/audio/speech"},
}
TEXT = "the quick brown fox"
SRT = f"1\n00:00:00,000 --> 00:00:01,000\n{TEXT}\n"
VTT = f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{TEXT}\n"
VERBOSE = {"task": "transcribe", "language": "english", "duration": 1.0, "text": TEXT, "segments": []}
STREAM_EVENTS = (
    {"type": "transcript.text.delta", "delta": "the quick"},
    {"type": "transcript.text.delta", "delta": " brown fox"},
    {"type": "transcript.text.done", "text": TEXT},
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def form(*parts: tuple[str, bytes, str | None], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body of (name, value, filename) parts, CRLF framed as browsers and SDKs send it."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def parts_of(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """A multipart body's parts as (name, filename, value), read with the standard library's MIME parser."""
    message = BytesParser(policy=default).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = []
    for part in message.iter_parts():
        value = part.get_payload(decode=True)
        assert isinstance(value, bytes)
        parts.append((part.get_param("name", header="content-disposition"), part.get_filename(), value))
    return parts  # type: ignore[return-value]


async def transcribing(request: web.Request) -> web.StreamResponse:
    """A transcription (or translation) answered in the form's response_format, or streamed as SSE events; the
    file's checksum and size ride in headers, so a test can check the upload arrived intact."""
    parts = parts_of(await request.read(), request.headers["Content-Type"])
    fields = {name: value.decode() for name, filename, value in parts if filename is None}
    files = [value for _, filename, value in parts if filename is not None]
    seen = {
        "X-File-Sha256": sha(files[0]) if files else "",
        "X-File-Size": str(len(files[0])) if files else "",
        "X-Model": fields.get("model", ""),
    }
    if fields.get("stream") == "true":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **seen})
        await response.prepare(request)
        for item in STREAM_EVENTS:
            await response.write(f"data: {json.dumps(item)}\n\n".encode())
        await response.write_eof()
        return response
    shape = fields.get("response_format", "json")
    if shape == "json":
        return web.json_response({"text": TEXT}, headers=seen)
    if shape == "verbose_json":
        return web.json_response(VERBOSE, headers=seen)
    plain = {"text": TEXT, "srt": SRT, "vtt": VTT}[shape]
    return web.Response(text=plain, content_type="text/plain", headers=seen)


async def editing(request: web.Request) -> web.StreamResponse:
    """An image edit or variation: one image whose b64 is the upload's checksum, so a test sees what arrived."""
    parts = parts_of(await request.read(), request.headers["Content-Type"])
    files = [value for _, filename, value in parts if filename is not None]
    return web.json_response({"created": 1, "data": [{"b64_json": sha(files[0]) if files else ""}]})
