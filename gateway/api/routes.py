"""The route table: every route the gateway serves, declared once. The app mounts it; the observing middleware
(operation names), auth (public and inference routes), metrics (which operations call a provider) and the error
renderer (each route's dialect) all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.api import catalog, health, inference, mcp, models, proxy, registry, responses, uploads, usage
from gateway.dialects import DIALECTS, Dialect, envelope
from gateway.dialects import anthropic as anthropic_dialect
from gateway.dialects import openai as openai_dialect
from gateway.errors import Handler
from gateway.telemetry.scanners import MessagesSseUsage, ResponsesSseUsage, SseUsage

PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class ApiRoute:
    path: str  # an aiohttp path pattern
    methods: tuple[str, ...]
    handler: Handler
    operation: str  # the name in metrics and logs (`gen_ai_operation_name` for inference)
    dialect: str = "openai"  # how this route's clients expect errors (and, later, answers) shaped
    public: bool = False  # served without credentials (probes)
    inference: bool = True  # calls a provider: needs the inference entitlement and gets the GenAI metrics


def model_route(
    path: str,
    operation: str,
    parse: inference.Parser,
    *,
    endpoint: str | None = None,
    stream_usage: bool = False,
    drop_empty: bool = False,
    dialect: str = "openai",
    translator: inference.Translator | None = None,
    encode: inference.Encoder | None = None,
    stream_scanner: Callable[[], SseUsage] = SseUsage,
    pin: inference.Pin | None = None,
    answered: inference.Answered | None = None,
    budget: bool = True,
    mcp_tools: bool = False,
) -> ApiRoute:
    """A POST whose JSON body names a model, relayed to the provider's endpoint named `endpoint` (by default the
    operation's name): only providers that declare it serve the route. A route of another dialect than OpenAI's
    names it, with the `translator` of its answers (its parser gives the request in OpenAI's shape), or, for an
    API relayed as it is, the `stream_scanner` that reads its streams' usage; `pin` and `answered` keep a request
    with the provider that holds its state. `mcp_tools`: the route's requests get MCP tools (with MCP_ENABLE), run
    by the gateway (gateway/mcp/loop.py)."""
    handler = inference.model_call(
        endpoint or operation,
        parse,
        stream_usage=stream_usage,
        drop_empty=drop_empty,
        translator=translator,
        encode=encode,
        stream_scanner=stream_scanner,
        pin=pin,
        answered=answered,
        budget=budget,
        mcp_tools=mcp_tools,
    )
    return ApiRoute(path, ("POST",), handler, operation, dialect)


def upload_route(path: str, operation: str) -> ApiRoute:
    """A POST whose multipart body names a model, its upload relayed as it arrives to the provider's endpoint of
    the operation's name."""
    return ApiRoute(path, ("POST",), uploads.upload_call(operation), operation)


# The Inference API of seed 001: the same request path under its own prefix, in its own dialect (the envelope).
INFERENCE_API = "/api/v1/inference"


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("/health", ("GET",), health.health, "other", public=True, inference=False),
    ApiRoute("/ready", ("GET",), health.ready, "other", public=True, inference=False),
    ApiRoute("/v1/models", ("GET",), models.list_models, "models", inference=False),
    ApiRoute("/v1/models/{model:.+}", ("GET",), models.retrieve_model, "models", inference=False),
    model_route(
        "/v1/chat/completions", "chat", openai_dialect.parse_chat, stream_usage=True, drop_empty=True, mcp_tools=True
    ),
    # The operation names are OpenTelemetry's GenAI ones where it has one; the endpoint is the table's name.
    model_route("/v1/embeddings", "embeddings", openai_dialect.parse_model_request),
    model_route(
        "/v1/completions",
        "text_completion",
        openai_dialect.parse_model_request,
        endpoint="completions",
        stream_usage=True,
    ),
    model_route("/v1/moderations", "moderations", openai_dialect.parse_model_request),
    model_route(
        "/v1/images/generations",
        "generate_content",
        openai_dialect.parse_model_request,
        endpoint="images_generations",
    ),
    upload_route("/v1/images/edits", "images_edits"),
    upload_route("/v1/images/variations", "images_variations"),
    model_route("/v1/audio/speech", "audio_speech", openai_dialect.parse_model_request),
    upload_route("/v1/audio/transcriptions", "audio_transcriptions"),
    upload_route("/v1/audio/translations", "audio_translations"),
    model_route("/v1/rerank", "rerank", openai_dialect.parse_model_request),
    # OpenAI's Responses API: creating one is a chat; the follow-ups go to the provider that made the response.
    model_route(
        "/v1/responses",
        "chat",
        openai_dialect.parse_model_request,
        endpoint=responses.ENDPOINT,
        stream_scanner=ResponsesSseUsage,
        pin=responses.pin,
        answered=responses.answered,
    ),
    # Counting a request's input tokens (OpenAI's `responses.input_tokens.count`) uses none; a previous response
    # it continues is at its provider.
    model_route(
        "/v1/responses/input_tokens",
        "count_tokens",
        openai_dialect.parse_model_request,
        endpoint="responses_input_tokens",
        pin=responses.pin,
        budget=False,
    ),
    ApiRoute("/v1/responses/{response_id}", ("GET", "DELETE"), responses.followup(), "responses"),
    ApiRoute("/v1/responses/{response_id}/input_items", ("GET",), responses.followup("/input_items"), "responses"),
    ApiRoute("/v1/responses/{response_id}/cancel", ("POST",), responses.followup("/cancel"), "responses"),
    # Anthropic's Messages API, for providers that speak it natively: a chat by OpenTelemetry's name.
    model_route(
        "/v1/messages",
        "chat",
        anthropic_dialect.parse_messages,
        endpoint="messages",
        dialect="anthropic",
        stream_scanner=MessagesSseUsage,
    ),
    model_route(
        "/v1/messages/count_tokens",
        "count_tokens",
        anthropic_dialect.parse_messages,
        endpoint="count_tokens",
        dialect="anthropic",
        budget=False,  # counting uses no tokens: nothing to reserve or charge
    ),
    ApiRoute("/v1/mcp/tools", ("GET",), mcp.list_tools, "mcp_tools", inference=False),
    ApiRoute("/proxy/{provider}/{path:[\\s\\S]*}", PROXY_METHODS, proxy.proxy, "proxy"),
    # The usage store's API (each client its own rows, admins all) and its page (which asks for a key itself).
    ApiRoute("/v1/usage", ("GET",), usage.usage_summary, "usage", inference=False),
    ApiRoute("/v1/usage/export", ("GET",), usage.usage_export, "usage", inference=False),
    ApiRoute("/v1/requests/{id}", ("GET",), usage.request_record, "usage", inference=False),
    ApiRoute("/usage", ("GET",), usage.usage_page, "other", public=True, inference=False),
    model_route(
        f"{INFERENCE_API}/chat",
        "chat",
        envelope.parse_chat,
        drop_empty=True,
        dialect="envelope",
        translator=envelope.answer_for(envelope.chat_data),
    ),
    model_route(
        f"{INFERENCE_API}/chat/stream",
        "chat",
        envelope.parse_chat_stream,
        stream_usage=True,
        drop_empty=True,
        dialect="envelope",
        translator=envelope.answer_for(envelope.chat_data, events=True),
    ),
    model_route(
        f"{INFERENCE_API}/embed",
        "embeddings",
        envelope.parse_embed,
        dialect="envelope",
        translator=envelope.answer_for(envelope.embed_data),
    ),
    model_route(
        f"{INFERENCE_API}/images",
        "generate_content",
        envelope.parse_images,
        endpoint="images_generations",
        dialect="envelope",
        translator=envelope.answer_for(envelope.images_data),
    ),
    ApiRoute(
        f"{INFERENCE_API}/transcribe",
        ("POST",),
        # JSON (base64 audio, sent on as a form upload) or a multipart form (relayed as it arrives).
        uploads.json_or_form(
            inference.model_call(
                "audio_transcriptions",
                envelope.parse_transcribe,
                translator=envelope.answer_for(envelope.transcription_data),
                encode=envelope.transcription_form,
            ),
            uploads.upload_call("audio_transcriptions", envelope.answer_for(envelope.transcription_data)),
        ),
        "audio_transcriptions",
        "envelope",
    ),
    # Synced model lists (live for a provider never synced), and a sync; the provider registry (admins change it).
    ApiRoute(f"{INFERENCE_API}/models", ("GET",), catalog.list_models, "models", "envelope", inference=False),
    ApiRoute(f"{INFERENCE_API}/models/sync", ("POST",), catalog.sync_models, "models", "envelope", inference=False),
    ApiRoute(
        f"{INFERENCE_API}/providers", ("GET", "POST"), registry.providers, "providers", "envelope", inference=False
    ),
    ApiRoute(
        f"{INFERENCE_API}/providers/{{idOrName}}",
        ("GET", "PUT", "DELETE"),
        registry.provider,
        "providers",
        "envelope",
        inference=False,
    ),
    # The usage store in the Inference API's shape (seed 001), the same rows and rules as /v1/usage.
    ApiRoute(f"{INFERENCE_API}/usage", ("GET",), usage.inference_usage, "usage", "envelope", inference=False),
    ApiRoute(
        f"{INFERENCE_API}/requests/{{id}}", ("GET",), usage.inference_request, "usage", "envelope", inference=False
    ),
)

# Paths no route matches speak the dialect of the API whose prefix they carry (a mistyped Inference API path gets
# its 404 in the envelope); any other path, OpenAI's.
DIALECT_PREFIXES: tuple[tuple[str, str], ...] = ((f"{INFERENCE_API}/", "envelope"), ("/v1/messages/", "anthropic"))


@dataclass(frozen=True, slots=True)
class Mounted:
    """What the rest of the app reads of the table once it is mounted, keyed by the routes' canonical patterns
    (`/proxy/{provider}/{path}`), the form `request.match_info.route.resource.canonical` gives back."""

    operations: Mapping[str, str]
    dialects: Mapping[str, Dialect]
    # For paths no route matches: (path prefix, its dialect), from DIALECT_PREFIXES.
    prefixes: tuple[tuple[str, Dialect], ...]
    public: frozenset[str]
    not_inference: frozenset[str]
    genai_operations: frozenset[str]


def mount(router: web.UrlDispatcher, routes: Sequence[ApiRoute]) -> Mounted:
    """Add every route to the router; ValueError for a dialect no module provides."""
    operations: dict[str, str] = {}
    dialects: dict[str, Dialect] = {}
    public: set[str] = set()
    not_inference: set[str] = set()
    for route in routes:
        dialect = DIALECTS.get(route.dialect)
        if dialect is None:
            raise ValueError(f"route {route.path}: unknown dialect {route.dialect!r} (known: {', '.join(DIALECTS)})")
        resource = router.add_resource(route.path)
        for method in route.methods:
            resource.add_route(method, route.handler)
        canonical = resource.canonical
        operations[canonical] = route.operation
        dialects[canonical] = dialect
        if route.public:
            public.add(canonical)
        if not route.inference:
            not_inference.add(canonical)
    return Mounted(
        operations,
        dialects,
        tuple((prefix, DIALECTS[name]) for prefix, name in DIALECT_PREFIXES),
        frozenset(public),
        frozenset(not_inference - public),
        frozenset(r.operation for r in routes if r.inference),
    )
