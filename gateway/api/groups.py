"""A model group's request: its deployments tried one after another, in the order the strategy gives, while
nothing has reached the client, within the group's attempt limit and time budget; the first answer that is not a
failure is relayed untouched. Each attempt feeds the deployment's circuit breaker, each answer its measurements.

The first byte is the answer's head: once a head that is not a failure is relayed, the client has an answer and no
other deployment is tried, whatever happens to the body.

`prepare` checks the request against the group once; `Deployments.first_answer` runs the tries; `group_call`
relays the answer. An MCP chat loop asks `first_answer` once per model turn instead (group_tools.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import RawHeaders

from gateway.access import auth
from gateway.config.providers import Provider
from gateway.config.settings import Settings
from gateway.dialects.openai import ModelRequest, UsageChunkStrip, without_empty_messages
from gateway.errors import GatewayError, InvalidRequest, NoProvider, UpstreamError, UpstreamTimeout
from gateway.exchange import EXCHANGE
from gateway.routing import filters
from gateway.routing.deployments import Fleet, GroupView, Member, Serving
from gateway.routing.filters import ModelFilter, Names
from gateway.routing.plan import Plan
from gateway.routing.resolve import Grouped
from gateway.routing.strategy import STRATEGIES, Demand
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.timeouts import CallPolicy, Limits
from gateway.upstream.transport import Response, UpstreamRequest

# Answers after which another deployment is tried: the provider could not or would not serve (its key refused,
# the model unknown to it, out of quota, down). Client credentials are never forwarded, so a 401 or 403 is about
# the gateway's key for that provider, not about the client. Any other answer is the request's own (400: the same
# request fails everywhere) and is relayed.
FALLBACK_STATUSES = frozenset({401, 403, 404, 408, 429})
# Bytes per token when estimating a request's input tokens from its body (English text and JSON run 3-4).
_BYTES_PER_TOKEN = 4


# A route of another dialect: (the provider, the model it receives) -> the translator of its answer.
Translator = Callable[[Provider, str], call.Translate]
# A request the provider takes in another encoding than JSON: (the parsed body, the model the provider receives)
# -> (the bytes it receives, their content type).
Encoder = Callable[[dict[str, Any], str], tuple[bytes, bytes]]


class GroupCall(NamedTuple):
    """How the route calls a provider, as `inference.model_call` was told: usage asked for in streams, empty
    messages dropped, another dialect's translator, the client's headers as a provider may see them, the stream
    scanner of the dialect, whether the client's token budget is reserved from, and the encoder of a request that
    is not sent as JSON (then the client headers are completed with its content type per deployment)."""

    stream_usage: bool = False
    drop_empty: bool = False
    translator: Translator | None = None
    client_headers: RawHeaders | None = None
    stream_scanner: Callable[[], SseUsage] = SseUsage
    budget: bool = True
    encode: Encoder | None = None


class Snapshot(NamedTuple):
    """What the handler read of the state at its start: the request finishes on these."""

    settings: Settings
    names: Names
    model_filter: ModelFilter
    policies: Mapping[str, CallPolicy]
    fleet: Fleet


class Tried(NamedTuple):
    """The attempt that got an answer: the deployment, its answer's head, the request it was sent, the limits it
    was held to, when it started (the transport's clock) and when it was tried (the fleet's), and whether the
    gateway asked for the stream's usage chunk."""

    member: Member
    answer: Response
    upstream: UpstreamRequest
    limits: Limits
    started: float
    now: float
    ask: bool


# The request one deployment is sent, and whether the gateway asked it for stream usage the client did not.
Build = Callable[[Member], tuple[UpstreamRequest, bool]]


class Deployments:
    """One request to a model group, checked once: its deployments tried in the strategy's order until one
    answers (`first_answer`), as often as the request needs an answer (once; an MCP loop, once per turn)."""

    def __init__(
        self,
        request: web.Request,
        operation: str,
        parsed: ModelRequest,
        grouped: Grouped,
        serving: Serving,
        snapshot: Snapshot,
        how: GroupCall,
        demand: Demand,
        images: bool,
    ) -> None:
        self.request, self.operation, self.parsed, self.grouped = request, operation, parsed, grouped
        self.serving, self.snapshot, self.how, self.demand, self.images = serving, snapshot, how, demand, images
        self.strategy = STRATEGIES[grouped.tags or grouped.group.strategy]
        self.clock = snapshot.fleet.clock
        # Deployments passed over by the answers the request already has (an MCP loop's earlier turns).
        self.earlier_fallbacks = 0

    def headers(
        self, provider: Provider, extra: RawHeaders = (), *, identity: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """The headers one deployment receives; `identity`: its answer is read by the gateway, unencoded."""
        how, settings = self.how, self.snapshot.settings
        client = self.request.raw_headers if how.client_headers is None else how.client_headers
        return outbound.upstream_headers(
            (*client, *extra) if extra else client,
            provider,
            # A translated answer is read by the gateway: it comes unencoded.
            disable_compression=settings.disable_compression or how.translator is not None or identity,
            request_id=self.request[EXCHANGE].request_id,
            inference=True,
        )

    async def first_answer(self, build: Build) -> Tried:
        """The first answer that is not a failure, from the deployments in the strategy's order; the 503 naming
        each deployment and why when none gives one."""
        exchange, snapshot, clock = self.request[EXCHANGE], self.snapshot, self.clock
        plan = Plan(self.grouped.group, self.serving, self.strategy, snapshot.fleet.rng, clock(), self.demand)
        transport = self.request.app[call.TRANSPORT]
        while (member := plan.next(clock())) is not None:
            refusal = _refusal(self.request, member, snapshot.model_filter, snapshot.names, self.images)
            if refusal is not None:
                plan.refused(member, refusal)
                continue
            plan.trying(member)
            exchange.provider, exchange.model = member.provider.id, member.model
            exchange.retries, exchange.error_type, exchange.upstream_status = 0, None, None
            exchange.fallbacks = self.earlier_fallbacks + plan.fallbacks
            rules = snapshot.policies[member.provider.id]
            upstream, ask = build(member)
            exchange.usage_requested = ask
            limits = _within(rules.limits(self.parsed.stream), plan.remaining(clock()))
            breaker = member.live.breaker
            now = clock()
            breaker.acquire(now)
            started = transport.loop.time()
            try:
                answer = await call.open_answer(transport, upstream, limits, exchange, rules.retry, started)
            except (UpstreamError, UpstreamTimeout) as exc:
                breaker.failure(clock(), exc.message)
                plan.failed(member, exc.message)
                continue
            except BaseException:
                breaker.release(clock())
                raise
            status = answer.status
            if status in FALLBACK_STATUSES or status >= 500:
                answer.discard()
                why = f"answered {status}"
                breaker.failure(clock(), why)
                plan.failed(member, why)
                continue
            breaker.success(clock())
            member.live.served += 1
            self.earlier_fallbacks = exchange.fallbacks
            return Tried(member, answer, upstream, limits, started, now, ask)
        exchange.fallbacks = self.earlier_fallbacks + plan.fallbacks
        raise plan.exhausted(clock())


async def prepare(
    request: web.Request,
    operation: str,
    raw: bytes,
    parsed: ModelRequest,
    grouped: Grouped,
    view: GroupView,
    snapshot: Snapshot,
    how: GroupCall,
) -> Deployments:
    """The request checked against the group as a whole (a deployment serves the operation, images allowed), its
    tokens reserved from the client's budget once, and its deployments ready to try."""
    exchange = request[EXCHANGE]
    group = grouped.group
    serving = view.serving(operation)
    if not serving.members and not serving.unconfigured:
        why = f": {'; '.join(serving.mismatched)}" if serving.mismatched else ""
        raise NoProvider(f"no provider of model {group.name!r} serves {operation}{why}")
    deployments = Deployments(
        request,
        operation,
        parsed,
        grouped,
        serving,
        snapshot,
        how,
        Demand(len(raw) // _BYTES_PER_TOKEN, _max_output(parsed.body)),
        filters.has_image_input(parsed.body),
    )
    exchange.group, exchange.strategy = group.name, deployments.strategy.name
    if deployments.images and not snapshot.settings.enable_vision:
        raise InvalidRequest(
            "image inputs are disabled on this gateway (set ENABLE_VISION=true to allow them)", code="vision_disabled"
        )
    if how.budget and auth.CLIENT in request:  # a client with a token budget reserves from it, once for the request
        await auth.reserve_tokens(request, len(raw), parsed.body)
    return deployments


async def group_call(deployments: Deployments, raw: bytes) -> web.StreamResponse:
    """The request relayed from the first deployment that answers."""
    request, operation, grouped, how = deployments.request, deployments.operation, deployments.grouped, deployments.how
    stream_usage, drop_empty, translator, _, stream_scanner, _, encode = how
    exchange = request[EXCHANGE]
    body, stream = deployments.parsed.body, deployments.parsed.stream
    # Messages without content are dropped for the providers whose entry says so (found once, when first needed).
    kept: list[dict[str, Any]] | None = None
    looked = False

    def build(member: Member) -> tuple[UpstreamRequest, bool]:
        nonlocal kept, looked
        provider, model = member.provider, member.model
        sent, rewrite = body, False
        if drop_empty and provider.drop_empty_messages:
            if not looked:
                kept, looked = without_empty_messages(body["messages"]), True
            if kept is not None:
                sent, rewrite = {**body, "messages": kept}, True
        exchange.request_body = sent
        ask = stream_usage and stream and provider.stream_usage and "stream_options" not in body
        extra: RawHeaders = ()
        if encode is None:
            payload = outbound.request_body(raw, sent, model, grouped.requested, "provider" in body, ask, rewrite)
        else:
            payload, content_type = encode(sent, model)
            extra = ((b"Content-Type", content_type),)
        endpoint = provider.endpoints[operation]
        return UpstreamRequest(endpoint.method, endpoint.url, deployments.headers(provider, extra), payload), ask

    member, answer, upstream, limits, started, now, ask = await deployments.first_answer(build)
    clock = deployments.clock
    # The scanner times the first token by the fleet's clock, as the measurements are kept.
    scanner: SseUsage | JsonUsage
    if stream:
        scanner = streamed = stream_scanner()
        streamed.clock = clock
    else:
        scanner = JsonUsage()
    exchange.scanner = scanner
    provider = member.provider
    response = await call.relay(
        request,
        request.app[call.TRANSPORT],
        upstream,
        limits,
        exchange,
        deployments.snapshot.policies[provider.id].retry,
        deployments.snapshot.settings.write_timeout,
        # A translated stream reads the usage chunk asked for on the client's behalf itself.
        UsageChunkStrip() if ask and translator is None else None,
        query_secret(provider),
        None if translator is None else translator(provider, member.model),
        answer,
        started,
    )
    measure(member, exchange.error_type, scanner, now, clock())
    return response


def _refusal(
    request: web.Request, member: Member, model_filter: ModelFilter, names: Names, images: bool
) -> GatewayError | None:
    """Why this deployment may not serve this request (the gateway's filter, the client's policy, images), if so."""
    pid, model = member.provider.id, member.model
    try:
        model_filter.check(pid, model)
        auth.check_model(request, pid, model, names)
    except GatewayError as exc:
        return exc
    if images and not member.provider.supports_vision:
        return InvalidRequest(f"provider {pid!r} does not accept image inputs", code="vision_not_supported")
    return None


def _within(limits: Limits, remaining: float) -> Limits:
    """An attempt's limits, its waits for the head cut to what is left of the group's budget."""
    if remaining >= limits.headers and remaining >= limits.budget:
        return limits
    remaining = max(remaining, 0.001)
    return Limits(
        headers=min(limits.headers, remaining),
        whole=limits.whole,
        idle=limits.idle,
        budget=min(limits.budget, remaining),
        connect=min(limits.connect, remaining),
    )


def _max_output(body: Mapping[str, object]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if type(value) is int and value > 0:
            return value
    return None


def measure(member: Member, error: str | None, scanner: SseUsage | JsonUsage, started: float, ended: float) -> None:
    """The answer's figures into the deployment's averages; an answer cut short counts against its breaker."""
    live = member.live
    if error in ("truncated", "timeout"):
        live.breaker.failure(ended, f"the answer was cut short ({error})")
        return
    usage = scanner.usage
    output = usage.output_tokens if usage is not None else None
    if isinstance(scanner, SseUsage) and scanner.first_content_at is not None:
        first = scanner.first_content_at
        rate = None
        if output is not None and output > 1 and ended > first:
            rate = (output - 1) / (ended - first)
        live.measure.observe(ended, first - started, rate, output)
    else:
        live.measure.observe(ended, None, None, output)
