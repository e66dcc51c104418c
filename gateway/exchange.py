"""One request's record (the Exchange) and what reads it when the request ends (sinks).

Handlers and the relay write what they learn into the record; once the answer is out, the observing middleware
hands it to each sink in turn (metrics, the access line, the token charge, ...). Nothing on the hot path writes a
metric or a log line per chunk. The record knows no scanner and no sink: they are attached by the code that reads
streams and by the app factory.

    telemetry.observe ── makes the Exchange ──> handlers, relay fill it ──> sinks read it
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeGuard

from aiohttp import web

# More tokens than any model's context in one answer: a report beyond it is not believed.
MAX_TOKENS = 10_000_000


class Usage(NamedTuple):
    """Tokens an answer reported. Made per answer: a named tuple is the cheapest record to build."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # of the input tokens, those read from the provider's prompt cache

    @classmethod
    def of(cls, value: Any) -> Usage | None:
        """A `usage` object, or None when it is not one: OpenAI's chat and completions shape (prompt_tokens,
        completion_tokens; embeddings have prompt_tokens alone), or the shape of Anthropic's Messages and OpenAI's
        Responses (input_tokens, output_tokens). Anthropic counts cache writes and reads apart from
        `input_tokens`; they are input all the same (billed, and what a token budget is about), so they are added
        to it. Cached tokens (the part of the
        input read from the provider's prompt cache) come from `prompt_tokens_details` / `input_tokens_details`
        or Anthropic's `cache_read_input_tokens`."""
        if not isinstance(value, dict):
            return None
        prompt = value.get("prompt_tokens")
        if prompt is not None:
            # The common shape, checked inline (it is read for every answer). Embeddings report no completion.
            completion = value.get("completion_tokens", 0)
            if (
                type(prompt) is int
                and type(completion) is int
                and 0 <= prompt <= MAX_TOKENS
                and 0 <= completion <= MAX_TOKENS
            ):
                # Read only once a usage object is found (at most once per answer), never per chunk.
                return cls(prompt, completion, _cached(value.get("prompt_tokens_details"), prompt))
            return None
        inputs, outputs = value.get("input_tokens"), value.get("output_tokens")
        if not (_count(inputs) and _count(outputs)):
            return None
        cached = 0
        for name in _CACHE_FIELDS:
            extra = value.get(name)
            if extra is not None:
                if not _count(extra):
                    return None
                inputs += extra
                if name == _CACHE_READ:
                    cached = extra
        if inputs > MAX_TOKENS:
            return None
        return cls(inputs, outputs, cached or _cached(value.get("input_tokens_details"), inputs))


# Anthropic's input tokens that `input_tokens` leaves out: written to the cache, and read from it.
_CACHE_READ = "cache_read_input_tokens"
_CACHE_FIELDS = ("cache_creation_input_tokens", _CACHE_READ)


def _count(value: Any) -> TypeGuard[int]:
    """A plain integer in a sane range: `true` is an int to Python, and a provider's 2**64 - 1 is no count."""
    return type(value) is int and 0 <= value <= MAX_TOKENS


def _cached(details: Any, limit: int) -> int:
    """OpenAI's `*_tokens_details.cached_tokens` when it is a plain count no larger than the input; else 0."""
    if not isinstance(details, dict):
        return 0
    cached = details.get("cached_tokens")
    return cached if type(cached) is int and 0 < cached <= limit else 0


class AnswerReader(Protocol):
    """What the relay feeds with the answer's bytes as they pass (a usage scanner); it never holds them up."""

    @property
    def usage(self) -> Usage | None: ...

    # perf_counter when the first line with content passed (time to first token); None for whole answers.
    first_content_at: float | None

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...

    def whole(self, body: bytes) -> None: ...


class ToolRun(NamedTuple):
    """One MCP tool the gateway ran for a chat request (gateway/mcp/loop.py): its name as chat sees it, its server,
    how it went (`ok`, `error`, `timeout`, `unavailable`), how long it took and when it started (wall clock)."""

    tool: str
    server: str
    outcome: str
    seconds: float
    at: float = 0.0  # epoch seconds


@dataclass(slots=True)
class Listing:
    """What a /v1/models request learnt: each provider list that failed, and the ids a good answer showed."""

    failures: list[tuple[str, str]] = field(default_factory=list)  # (provider id, kind)
    listed: list[str] | None = None  # `provider/model` ids


@dataclass(slots=True)
class Exchange:
    operation: str = "other"  # the route table's operation name: chat, models, proxy, health ...
    route: str = "unmatched"  # the matched route's pattern, never the raw path a client chose
    provider: str | None = None
    model: str | None = None  # as forwarded to the provider
    stream: bool = False
    upstream_status: int | None = None
    started: float = field(default_factory=time.perf_counter)
    first_chunk_at: float | None = None  # perf_counter when the first body byte went to the client
    bytes_out: int = 0
    scanner: AnswerReader | None = None
    client_disconnected: bool = False
    error_type: str | None = None  # set when the gateway itself failed the request (status class, kind)
    retries: int = 0
    client_name: str | None = None  # the authenticated client's name (never its key)
    request_id: str = ""  # the client's X-Request-ID when sane, else generated; on the response, upstream, logs
    bytes_in: int = 0  # request body bytes read from the client
    usage_requested: bool = False  # the gateway asked the provider for stream usage the client did not ask for
    upstream_request_id: str | None = None  # the provider's own x-request-id, relayed as X-Upstream-Request-ID
    request_body: dict[str, Any] | None = None  # the parsed request body, for the sinks (development logs, usage)
    requested_model: str | None = None  # the model name the client sent (a group, an alias, `provider/model`)
    # A request for a model group: its name, the strategy that ordered its deployments (tags joined with '+', or
    # the group's default), and how many deployments were tried beyond the first. `retries` stays per upstream.
    group: str | None = None
    strategy: str | None = None
    fallbacks: int = 0
    # Per-operation details hang off the record; only the operation that has them fills them in.
    listing: Listing | None = None
    tool_runs: list[ToolRun] | None = None  # a chat request whose MCP tools the gateway ran


EXCHANGE = web.RequestKey("exchange", Exchange)


class Sink(Protocol):
    """A consumer of finished requests. Called once per request after its answer is out, never per chunk; it
    must not block (a slow consumer queues its own work off the request path)."""

    def __call__(self, request: web.Request, exchange: Exchange, status: int, ended: float) -> None: ...
