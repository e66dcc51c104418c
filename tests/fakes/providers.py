"""The fake providers: aiohttp servers on 127.0.0.1 standing in for the real ones, and what they answer."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.bodies import DONE, chat_answer, chunk, event

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as it reached a fake provider."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def default_answer(request: web.Request) -> web.StreamResponse:
    if request.path.endswith("/models"):
        return web.json_response({"object": "list", "data": [{"id": "m1", "object": "model", "created": 7}]})
    return web.json_response(chat_answer())


def answering(payload: Any, status: int = 200) -> Handler:
    """A handler answering `payload` as JSON with `status`, whatever was asked."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handler


def sending(*parts: bytes, content_type: str = "text/event-stream", then: str = "end") -> Handler:
    """A handler writing `parts`, then ending normally ("end"), or resetting the connection ("reset")."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        if then == "reset":
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    return handler


@dataclass
class FakeProvider:
    """A provider on 127.0.0.1: each request goes to the handler for its path in `routes`, else to `default`. With
    `record` (the default), each request is first read whole and kept in `requests`; without, the handler alone
    decides whether and when the body is read, and nothing is kept (for long runs)."""

    routes: dict[str, Handler] = field(default_factory=dict)
    default: Handler = default_answer
    record: bool = True
    requests: list[Seen] = field(default_factory=list)
    server: TestServer = field(init=False, repr=False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.record:
            body = await request.read()
            self.requests.append(
                Seen(
                    request.method,
                    request.path,
                    request.raw_path,
                    dict(request.query),
                    dict(request.headers),
                    list(request.raw_headers),
                    body,
                )
            )
        return await self.routes.get(request.path, self.default)(request)

    async def start(self, aiohttp_server: Any, **options: Any) -> Self:
        """Serve on a test server from pytest-aiohttp's `aiohttp_server` fixture (closed with the test); `options`
        go to it (`ssl`, say)."""
        self.server = await aiohttp_server(self.app(), **options)
        return self

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

    @property
    def last(self) -> Seen:
        return self.requests[-1]


async def start_provider(
    aiohttp_server: Any, default: Handler = default_answer, routes: Mapping[str, Handler] | None = None
) -> FakeProvider:
    """A recording FakeProvider answering with `default` (every path not in `routes`), serving until the test ends."""
    return await FakeProvider(dict(routes or {}), default).start(aiohttp_server)


PLAIN_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
STREAM_USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
ACCESS_USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
STREAM_WORDS = ("Hello", " there", " friend")
# On every chat answer: the provider's own request id, and its own rate-limit figures (which must never reach a
# client the gateway limits).
PROVIDER_HEADERS = {
    "x-request-id": "req_upstream_1",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
}


# A stream as ChatProvider sends it: a role-only first chunk without content (time to first token must not stop
# on it), the words, the stop chunk; then the usage when there is any, and [DONE].
FIRST_CHUNK = chunk({"role": "assistant", "content": ""})
WORD_CHUNKS = b"".join(chunk({"content": word}) for word in STREAM_WORDS)
STOP_CHUNK = chunk({}, "stop")


@dataclass(kw_only=True)
class ChatProvider(FakeProvider):
    """An OpenAI-compatible provider under /v1 that records what reached it. GET /v1/models lists `models`. A chat
    answers by its model's name: `fail` 500, `unauth` 401, `slow` only after 5 s; otherwise 200 with `usage`, or
    streamed (FIRST_CHUNK, WORD_CHUNKS, STOP_CHUNK, then `stream_usage` when the request asked for it with
    stream_options.include_usage, or always with `usage_unasked`, then [DONE]). Streamed, `held` sets `holding` after
    its first chunk and waits for `release`; `truncated` breaks off before its stop chunk. Other paths answer
    {"path": ...}."""

    models: tuple[str, ...] = ("plain", "streamer")
    usage: dict[str, int] = field(default_factory=lambda: dict(PLAIN_USAGE))
    stream_usage: dict[str, int] = field(default_factory=lambda: dict(STREAM_USAGE))
    usage_unasked: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.routes = {"/v1/models": self.list_models, "/v1/chat/completions": self.chat}
        self.default = self.other

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def other(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"path": request.path})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model = body["model"]
        if model == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if model == "unauth":
            return web.json_response({"error": {"message": "bad key", "type": "invalid_api_key"}}, status=401)
        if model == "slow":
            await asyncio.sleep(5)
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three four five"}}],
                "usage": self.usage,
            }
            return web.json_response(answer, headers=PROVIDER_HEADERS)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **PROVIDER_HEADERS})
        await response.prepare(request)
        await response.write(FIRST_CHUNK)
        if model == "held":
            self.holding.set()
            await self.release.wait()
        for word in STREAM_WORDS:
            await response.write(chunk({"content": word}))
        if model == "truncated":
            # Break off mid-answer without the terminating chunk.
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(STOP_CHUNK)
        if self.usage_unasked or (body.get("stream_options") or {}).get("include_usage"):
            tail = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": self.stream_usage}
            await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
        await response.write(DONE)
        await response.write_eof()
        return response


@dataclass(kw_only=True)
class FlakyProvider(FakeProvider):
    """A provider that fails at random (seeded): each request streams `events` events, or gets a 503, a reset or
    silence mid-stream, no head at all, or garbage, as often as BEHAVIOURS says. `in_flight` counts requests still
    being answered, `seen` what each got. It keeps no record of requests (it serves long runs)."""

    # What it does with one request, and how often.
    BEHAVIOURS: ClassVar[list[tuple[str, int]]] = [
        ("ok", 70),
        ("busy", 8),
        ("reset", 7),
        ("silent", 5),
        ("no_head", 5),
        ("garbage", 5),
    ]

    seed: int
    events: int = 20
    in_flight: int = 0
    seen: collections.Counter[str] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.default = self.handle
        self.record = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._answer(request)
        except ConnectionResetError:
            # The gateway hung up on this answer (its client left, or a limit ended it).
            return web.Response()
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        names, weights = zip(*self.BEHAVIOURS, strict=True)
        behaviour = self.rng.choices(names, weights)[0]
        self.seen[behaviour] += 1
        if behaviour == "busy":
            return web.json_response({"error": {"message": "busy"}}, status=503)
        if behaviour == "no_head":
            await asyncio.sleep(3600)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        cut = self.rng.randrange(1, self.events)
        for n in range(self.events):
            if n == cut and behaviour in ("reset", "silent", "garbage"):
                if behaviour == "reset":
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if behaviour == "silent":
                    await asyncio.sleep(3600)
                await response.write(b"data: {\x00\xff not json\n\n")
            await response.write(event(n))
            await asyncio.sleep(self.rng.uniform(0.001, 0.01))
        await response.write(DONE)
        await response.write_eof()
        return response


def access_provider() -> ChatProvider:
    """The access-control tests' provider: three models, and 12 tokens (7 in, 5 out) in every answer, streamed or
    not, asked for or not."""
    return ChatProvider(
        models=("alpha-1", "alpha-2", "beta-1"), usage=ACCESS_USAGE, stream_usage=ACCESS_USAGE, usage_unasked=True
    )


@dataclass(kw_only=True)
class Deployment(FakeProvider):
    """One deployment of a model group: an OpenAI-compatible chat provider (any path) with a failure pattern, a
    latency and a token rate that are deterministic. It answers `script`'s statuses in turn (then 200s); a failure
    is an error JSON with that status. Any answer first advances `clock` (the gateway's fleet clock) by `stall`. A 200
    advances it by `ttft` before its first content, and streamed, by (`tokens` - 1) / `rate` before the rest; with
    `gate`, it waits after the first content until the test, having read that content from the gateway, sets it,
    so the gateway reads the clock at each point before it moves on. `cut` breaks the stream off after the first
    content. Every answer reports `tokens` output tokens."""

    script: list[int] = field(default_factory=list)
    clock: Callable[[float], None] | None = None  # advances the fake clock by its argument
    stall: float = 0.0
    ttft: float = 0.0
    rate: float = 10.0
    tokens: int = 11
    gate: asyncio.Event | None = None
    cut: bool = False
    name: str = "d"

    def __post_init__(self) -> None:
        self.default = self.chat

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _advance(self, seconds: float) -> None:
        if self.clock is not None and seconds:
            self.clock(seconds)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self._advance(self.stall)
        if self.script:
            status = self.script.pop(0)
            if status != 200:
                return web.json_response({"error": {"message": f"{self.name} says {status}"}}, status=status)
        usage = {"prompt_tokens": 5, "completion_tokens": self.tokens, "total_tokens": 5 + self.tokens}
        self._advance(self.ttft)
        if not body.get("stream"):
            answer = chat_answer(body["model"], f"from {self.name}")
            answer["usage"] = usage
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": f"from {self.name}"}))
        if self.cut:
            assert request.transport is not None
            request.transport.abort()
            return response
        if self.gate is not None:
            await self.gate.wait()
        self._advance((self.tokens - 1) / self.rate)
        await response.write(STOP_CHUNK)
        tail = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(tail) + b"\n\n" + DONE)
        await response.write_eof()
        return response


# What SurfacesProvider answers beyond chat, and the tool call its `tooler` model makes.
EMBEDDING_ANSWER = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 1, "embedding": [0.5, 0.25]},
        {"object": "embedding", "index": 0, "embedding": [0.125, -1.0]},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}
IMAGE_ANSWER = {
    "created": 1,
    "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": "A red sunset over snowy mountains"}],
    "usage": {"input_tokens": 9, "output_tokens": 4160, "total_tokens": 4169},
}
TRANSCRIPTION_ANSWER = {
    "text": "Hello there",
    "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 3, "total_tokens": 17},
}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}


@dataclass(kw_only=True)
class SurfacesProvider(ChatProvider):
    """ChatProvider with OpenAI's embeddings (EMBEDDING_ANSWER, its items out of order), image generation
    (IMAGE_ANSWER) and transcription (TRANSCRIPTION_ANSWER) under /v1, and one more chat model: `tooler` calls
    TOOL_CALL (whole, or streamed in two argument pieces, with finish reason tool_calls)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.routes["/v1/embeddings"] = self.embeddings
        self.routes["/v1/images/generations"] = self.images
        self.routes["/v1/audio/transcriptions"] = self.transcriptions
        self.routes["/v1/chat/completions"] = self.chat_or_tools

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(EMBEDDING_ANSWER)

    async def images(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(IMAGE_ANSWER)

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(TRANSCRIPTION_ANSWER)

    async def chat_or_tools(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body["model"] != "tooler":
            return await self.chat(request)
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
            answer = {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "model": "tooler-0613",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": self.usage,
            }
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
        await response.write(chunk({"role": "assistant", "content": None, "tool_calls": [first]}))
        for piece in ('{"city":', '"Paris"}'):
            await response.write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await response.write(chunk({}, "tool_calls"))
        await response.write(DONE)
        await response.write_eof()
        return response
