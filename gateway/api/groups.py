"""A model group's request: its deployments tried one after another, in the order the strategy gives, while
nothing has reached the client, within the group's attempt limit and time budget; the first answer that is not a
failure is relayed untouched. Each attempt feeds the deployment's circuit breaker, each answer its measurements.

The first byte is the answer's head: once a head that is not a failure is relayed, the client has an answer and no
other deployment is tried, whatever happens to the body.
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
from gateway.routing.deployments import Fleet, GroupView, Member
from gateway.routing.filters import ModelFilter, Names
from gateway.routing.plan import Plan
from gateway.routing.resolve import Grouped
from gateway.routing.strategy import STRATEGIES, Demand
from gateway.telemetry.scanners import JsonUsage, SseUsage
from gateway.upstream import call, outbound
from gateway.upstream.scrub import query_secret
from gateway.upstream.timeouts import CallPolicy, Limits
from gateway.upstream.transport import UpstreamRequest

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


async def group_call(
    request: web.Request,
    operation: str,
    raw: bytes,
    parsed: ModelRequest,
    grouped: Grouped,
    view: GroupView,
    snapshot: Snapshot,
    how: GroupCall,
) -> web.StreamResponse:
    settings, names, model_filter, policies, fleet = snapshot
    stream_usage, drop_empty, translator, client_headers, stream_scanner, budget, encode = how
    exchange = request[EXCHANGE]
    group = grouped.group
    serving = view.serving(operation)
    if not serving.members and not serving.unconfigured:
        why = f": {'; '.join(serving.mismatched)}" if serving.mismatched else ""
        raise NoProvider(f"no provider of model {group.name!r} serves {operation}{why}")
    strategy = STRATEGIES[grouped.tags or group.strategy]
    exchange.group, exchange.strategy = group.name, strategy.name
    body, stream = parsed.body, parsed.stream
    images = filters.has_image_input(body)
    if images and not settings.enable_vision:
        raise InvalidRequest(
            "image inputs are disabled on this gateway (set ENABLE_VISION=true to allow them)", code="vision_disabled"
        )
    if budget and auth.CLIENT in request:  # a client with a token budget reserves from it, once for the request
        await auth.reserve_tokens(request, len(raw), body)
    # Messages without content are dropped for the providers whose entry says so (found once, when first needed).
    kept: list[dict[str, Any]] | None = None
    looked = False
    clock = fleet.clock
    plan = Plan(group, serving, strategy, fleet.rng, clock(), Demand(len(raw) // _BYTES_PER_TOKEN, _max_output(body)))
    transport = request.app[call.TRANSPORT]
    while (member := plan.next(clock())) is not None:
        provider, model = member.provider, member.model
        pid = provider.id
        refusal = _refusal(request, member, model_filter, names, images)
        if refusal is not None:
            plan.refused(member, refusal)
            continue
        plan.trying(member)
        exchange.provider, exchange.model = pid, model
        exchange.retries, exchange.error_type, exchange.upstream_status = 0, None, None
        exchange.fallbacks = plan.fallbacks
        rules = policies[pid]
        sent, rewrite = body, False
        if drop_empty and provider.drop_empty_messages:
            if not looked:
                kept, looked = without_empty_messages(body["messages"]), True
            if kept is not None:
                sent, rewrite = {**body, "messages": kept}, True
        exchange.request_body = sent
        ask = stream_usage and stream and provider.stream_usage and "stream_options" not in body
        exchange.usage_requested = ask
        headers = request.raw_headers if client_headers is None else client_headers
        if encode is None:
            payload = outbound.request_body(raw, sent, model, grouped.requested, "provider" in body, ask, rewrite)
        else:
            payload, content_type = encode(sent, model)
            headers = (*headers, (b"Content-Type", content_type))
        upstream = UpstreamRequest(
            provider.endpoints[operation].method,
            provider.endpoints[operation].url,
            outbound.upstream_headers(
                headers,
                provider,
                # A translated answer is read by the gateway: it comes unencoded.
                disable_compression=settings.disable_compression or translator is not None,
                request_id=exchange.request_id,
                inference=True,
            ),
            payload,
        )
        limits = _within(rules.limits(stream), plan.remaining(clock()))
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
        # The scanner times the first token by the fleet's clock, as the measurements are kept.
        scanner: SseUsage | JsonUsage
        if stream:
            scanner = streamed = stream_scanner()
            streamed.clock = clock
        else:
            scanner = JsonUsage()
        exchange.scanner = scanner
        response = await call.relay(
            request,
            transport,
            upstream,
            limits,
            exchange,
            rules.retry,
            settings.write_timeout,
            # A translated stream reads the usage chunk asked for on the client's behalf itself.
            UsageChunkStrip() if ask and translator is None else None,
            query_secret(provider),
            None if translator is None else translator(provider, model),
            answer,
            started,
        )
        _measure(member, exchange.error_type, scanner, now, clock())
        return response
    exchange.fallbacks = plan.fallbacks
    raise plan.exhausted(clock())


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


def _measure(member: Member, error: str | None, scanner: SseUsage | JsonUsage, started: float, ended: float) -> None:
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
