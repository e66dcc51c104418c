"""Every example of seed 001 (`seed001.txt`, the product document, verbatim) run as written with curl, only the
host and port changed, against a gateway whose providers are fakes behind the shipped providers.yaml: each gets
the documented shape back. The registry example registers `openai`, which the shipped providers.yaml declares: it
gets the envelope's 409 naming the file, and the same command under another name the seed's answer. The JSON
transcription example's audio is a placeholder (`<base64-encoded-audio>`): it gets the envelope's 400 saying so."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.gateways import TINY, start_gateway
from tests.fakes.providers import STREAM_USAGE, STREAM_WORDS, SurfacesProvider
from tests.fakes.tables import shipped_table
from tests.fakes.usage import store_ready

SEED = Path(__file__).with_name("seed001.txt")
SEED_URL = "http://localhost:3000"
CURL_LIMIT = 30  # seconds for one example


def examples() -> list[list[str]]:
    """The seed's curl commands as argument lists: a command runs from `curl` to the end of its last line that
    does not continue (a trailing backslash or an open quote)."""
    commands: list[list[str]] = []
    lines = SEED.read_text("utf-8").splitlines()
    n = 0
    while n < len(lines):
        if not lines[n].startswith("curl "):
            n += 1
            continue
        text = lines[n]
        while text.endswith("\\") or text.count("'") % 2:
            n += 1
            text = text.removesuffix("\\") + "\n" + lines[n]
        commands.append(shlex.split(text))
        n += 1
    return commands


def _chat(data: dict[str, Any]) -> None:
    assert data["content"] == "one two three four five"
    assert data["model"] == "claude-sonnet-4-20250514"
    assert data["usage"] == {"inputTokens": 11, "outputTokens": 7}


def _image(data: dict[str, Any]) -> None:
    assert data["model"] == "gpt-image-1"
    assert data["images"] == [{"b64Json": "iVBORw0KGgo=", "revisedPrompt": "A red sunset over snowy mountains"}]


def _embedding(data: dict[str, Any]) -> None:
    assert data["embeddings"] == [[0.125, -1.0], [0.5, 0.25]]
    assert data["usage"] == {"inputTokens": 4, "outputTokens": 0}


def _usage(data: dict[str, Any]) -> None:
    # The seed's summary fields (and the cost the gateway adds); the example's own traffic: none yet.
    assert data["summary"] == {
        "totalRequests": 0,
        "totalErrors": 0,
        "totalInputTokens": 0,
        "totalOutputTokens": 0,
        "totalTokens": 0,
        "totalCost": 0.0,
        "avgDurationMs": None,
    }
    assert data["requests"] == []


def _transcription(data: dict[str, Any]) -> None:
    assert data["text"] == "Hello there"
    assert data["usage"] == {"inputTokens": 14, "outputTokens": 3}


PLACEHOLDER = "<base64-encoded-audio>"

# What each example's route answers: a check of the envelope's data, the stream's events, or "not served".
EXPECTED: dict[str, Callable[[dict[str, Any]], None] | str] = {
    "/providers": "registry",
    "/chat": _chat,
    "/chat/stream": "events",
    "/images": _image,
    "/embed": _embedding,
    "/transcribe": _transcription,
    "/usage": _usage,
}


def test_the_seed_has_the_examples_this_test_knows() -> None:
    routes = [_route(command) for command in examples()]
    assert routes == [
        "/providers",
        "/chat",
        "/chat/stream",
        "/images",
        "/embed",
        "/transcribe",
        "/transcribe",
        "/usage",
    ]


def _route(command: list[str]) -> str:
    (url,) = [arg for arg in command if arg.startswith(SEED_URL)]
    return url.removeprefix(SEED_URL + "/api/v1/inference").split("?")[0]


async def _curl(command: list[str], base: str, cwd: Path) -> tuple[int, bytes]:
    args = [arg.replace(SEED_URL, base) if arg.startswith(SEED_URL) else arg for arg in command]
    process = await asyncio.create_subprocess_exec(
        *args, "--silent", "--show-error", "--write-out", "\n%{http_code}", cwd=cwd, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), CURL_LIMIT)
    assert process.returncode == 0
    body, _, status = out.rpartition(b"\n")
    return int(status), body


@pytest.mark.parametrize("index", range(len(examples())))
async def test_each_example_as_written(aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, index: int) -> None:
    openai = await SurfacesProvider().start(aiohttp_server)
    anthropic = await SurfacesProvider().start(aiohttp_server)
    table = shipped_table({"openai": f"{openai.url}/v1", "anthropic": f"{anthropic.url}/v1"})
    # The usage store on (a SQLite file), its API and the registry's changes served with auth off as the seed's
    # examples call them.
    gateway = await start_gateway(
        aiohttp_client,
        table,
        TINY,
        usage_store=str(tmp_path / "usage.db"),
        usage_api_enable=True,
        registry_write_enable=True,
    )
    await store_ready(gateway.app)
    (tmp_path / "recording.mp3").write_bytes(b"ID3 not really audio")  # the multipart example's file
    command = examples()[index]
    status, body = await _curl(command, f"http://127.0.0.1:{gateway.port}", tmp_path)
    expected = EXPECTED[_route(command)]
    if any(PLACEHOLDER in arg for arg in command):
        answer = orjson.loads(body)
        assert (status, answer["error"]["code"]) == (400, "BAD_REQUEST")
        assert answer["error"]["message"].startswith("audio must be base64")
    elif expected == "registry":
        assert status == 409
        assert orjson.loads(body) == {
            "success": False,
            "error": {
                "code": "CONFLICT",
                "message": "provider 'openai' is declared in providers.yaml: it is read-only here",
            },
        }
        # The same command under a name the file does not hold: the seed's answer.
        renamed = [arg.replace('"name": "openai"', '"name": "openai-2"') for arg in command]
        assert renamed != command
        status, body = await _curl(renamed, f"http://127.0.0.1:{gateway.port}", tmp_path)
        assert status == 201
        answer = orjson.loads(body)
        assert answer["success"] is True
        data = answer["data"]
        assert {k: data[k] for k in ("name", "type", "defaultModel", "envVar")} == {
            "name": "openai-2",
            "type": "openai",
            "defaultModel": "gpt-4o",
            "envVar": "OPENAI_API_KEY",
        }
        assert data["created"] == data["updated"]
        assert len(data["created"]) == len("2026-03-05T12:00:00.000Z") and data["created"].endswith("Z")
        assert not openai.requests and not anthropic.requests
    elif expected == "events":
        assert status == 200
        assert body == b"".join(
            [b'data: {"type":"content_block_delta","delta":{"text":"%s"}}\n\n' % w.encode() for w in STREAM_WORDS]
            + [
                b'data: {"type":"message_stop","finishReason":"stop","usage":{"inputTokens":%d,"outputTokens":%d}}\n\n'
                % (STREAM_USAGE["prompt_tokens"], STREAM_USAGE["completion_tokens"])
            ]
        )
    else:
        assert status == 200
        answer = orjson.loads(body)
        assert set(answer) == {"success", "data"} and answer["success"] is True
        assert callable(expected)
        expected(answer["data"])
