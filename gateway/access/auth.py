"""Who is calling, and may they: the client-auth middleware (API keys or OIDC tokens), the per-client policy checks
the handlers call, rate limits, and the x-ratelimit-* headers set on every answer just before it starts.

    GatewayError
    ├── Unauthenticated     401 authentication_error / invalid_api_key (with WWW-Authenticate)
    ├── PaymentRequired     402 insufficient_quota / paid_account_required
    ├── Forbidden           403 permission_error
    ├── RateLimited         429 requests|tokens / rate_limit_exceeded (with Retry-After, x-ratelimit-*)
    └── LimiterUnavailable  503 server_error / rate_limiter_unavailable (Redis down, failing closed)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDictProxy

from gateway.access.keys import EMPTY_STORE, UNRESTRICTED, ClientPolicy, KeyStore, load_keys
from gateway.access.oidc import OidcVerifier, TokenRejected, looks_like_jwt
from gateway.access.ratelimit import (
    Clock,
    Decision,
    Limiter,
    LimiterCollector,
    MemoryLimiter,
    Quota,
    RedisHealth,
    RedisLimiter,
)
from gateway.config.filestamp import stamp
from gateway.config.settings import Settings
from gateway.errors import (
    Forbidden,
    Handler,
    LimiterUnavailable,
    ModelNotAllowed,
    PaymentRequired,
    RateLimited,
    Unauthenticated,
)
from gateway.exchange import EXCHANGE, MAX_TOKENS, Exchange
from gateway.routing.filters import Names
from gateway.tasks import running

log = structlog.get_logger("gateway.auth")

MAX_CREDENTIAL = 8192


@dataclass(frozen=True, slots=True)
class Client:
    """The authenticated caller: a name for logs and metrics (never a key), its policy and its budget's id."""

    name: str
    policy: ClientPolicy
    bucket: str

    @property
    def quota(self) -> Quota:
        return Quota(self.policy.requests_per_minute, self.policy.tokens_per_minute)


@dataclass(slots=True)
class Access:
    """The app's access-control state. `keys` is swapped whole when the keys file changes."""

    keys: KeyStore = EMPTY_STORE
    keys_file: str | None = None
    oidc: OidcVerifier | None = None
    policy_claim: str | None = None
    name_claim: str = "sub"
    limiter: Limiter = field(default_factory=MemoryLimiter)
    # Token charges on their way to a shared limiter (Redis): off the request path, awaited at shutdown.
    charges: set[asyncio.Task[None]] = field(default_factory=set)
    reserve_output: int = 1024  # output tokens reserved for a body that sets no limit of its own

    def spend(self, client: Client, tokens: int) -> None:
        """Charge tokens an answer used to the client's budget, without making anyone wait for it."""
        limiter = self.limiter
        if isinstance(limiter, MemoryLimiter):
            limiter.charge_now(client.bucket, client.quota, tokens)
            return
        task = asyncio.get_running_loop().create_task(limiter.charge(client.bucket, client.quota, tokens))
        self.charges.add(task)
        task.add_done_callback(self.charges.discard)

    @property
    def redis_health(self) -> RedisHealth | None:
        """For the metrics: None unless limits are shared through Redis."""
        return self.limiter.health if isinstance(self.limiter, RedisLimiter) else None


ACCESS = web.AppKey("access", Access)
# A test seam: the clock the rate limiters read (wall-clock seconds). Set before the app starts.
CLOCK = web.AppKey("ratelimit_clock", Clock)
CLIENT = web.RequestKey("client", Client)
# Four bytes a token: on the high side for text and JSON (the body's keys and punctuation count too); the answer's
# reported usage settles it.
BYTES_PER_TOKEN = 4
# The body fields that cap an answer's output tokens (chat, legacy completions, Anthropic, the Responses API).
_OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens a request reserved from its client's budget before it went upstream."""

    input: int  # estimated from the body's size
    output: int  # the body's own cap, or the configured allowance
    held: int  # what was taken from the budget: input + output, at most one window's worth


RESERVED = web.RequestKey("reserved_tokens", Reservation)
DECISION = web.RequestKey("ratelimit_decision", Decision)


def middlewares(settings: Settings, public: frozenset[str], not_inference: frozenset[str]) -> list[Middleware]:
    """What app.py puts in its middleware list: nothing while client auth is off. `public` routes (probes) are
    never behind credentials; `not_inference` routes need no inference entitlement. Both hold route patterns,
    matched by the route that will run, so no spelling of a path can reach another handler through them."""
    if not settings.auth_enable:
        return []

    @web.middleware
    async def require_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authenticate, check the entitlement and the request budget, then run the handler."""
        resource = _resource(request)
        if resource in public:
            return await handler(request)
        access = request.app[ACCESS]
        client = await identify(access, request.headers)
        request[CLIENT] = client
        request[EXCHANGE].client_name = client.name
        if not client.policy.inference and resource not in not_inference:
            raise PaymentRequired("paid account required: this client is not entitled to inference")
        quota = client.quota
        if quota.requests is None and quota.tokens is None:
            return await handler(request)
        decision = await access.limiter.acquire(client.bucket, quota)
        if decision.unavailable:
            raise LimiterUnavailable("rate limits cannot be checked now; try again shortly", headers=decision.headers())
        if not decision.allowed:
            raise _rate_limited(decision)
        request[DECISION] = decision
        return await handler(request)

    return [require_client]


async def reserve_tokens(request: web.Request, body_size: int, body: dict[str, Any]) -> None:
    """Before a request whose body names a model goes upstream: reserve what it may use from its client's token
    budget (its input, estimated from the body's size, and its output allowance), or refuse it with 429 when the
    budget is spent. Concurrent requests each see the reservations of those before them."""
    client = request.get(CLIENT)
    if client is None or client.policy.tokens_per_minute is None:
        return
    access = request.app[ACCESS]
    estimate = -(-body_size // BYTES_PER_TOKEN)
    output = _output_allowance(body, access.reserve_output)
    # Never more than the whole budget: that already keeps every other request out until this one settles, and a
    # larger hold would be cut at the debt floor and could not be settled exactly.
    reservation = Reservation(estimate, output, min(estimate + output, client.policy.tokens_per_minute))
    decision = await access.limiter.reserve(client.bucket, client.quota, reservation.held)
    if decision.unavailable:
        raise LimiterUnavailable("rate limits cannot be checked now; try again shortly", headers=decision.headers())
    if not decision.allowed:
        raise _rate_limited(decision, "tokens")
    request[RESERVED] = reservation
    request[DECISION] = decision


def charge_tokens(request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
    """A sink: a finished answer's tokens go to its client's token budget, settling what was reserved. Without
    a usage report (a stream the client left early, a provider that sends none), an estimate is charged: the
    input as reserved and the relayed bytes as output tokens, never more than the output allowance. An answer
    that is an error used nothing."""
    client = request.get(CLIENT)
    if client is None or client.policy.tokens_per_minute is None:
        return
    reserved = request.get(RESERVED)
    usage = exchange.scanner.usage if exchange.scanner is not None else None
    if usage is not None:
        used = usage.input_tokens + usage.output_tokens
    elif reserved is None or status >= 400:
        used = 0
    else:
        used = reserved.input + min(reserved.output, -(-exchange.bytes_out // BYTES_PER_TOKEN))
    charge = used - (reserved.held if reserved is not None else 0)
    if charge:
        request.app[ACCESS].spend(client, charge)


def setup(app: web.Application, settings: Settings, register: Callable[[LimiterCollector], None] | None = None) -> None:
    """Load the keys file (ConfigError if it is bad); register the state, its lifecycle and the header hook.
    `register` receives the collector of a shared limiter's health, for the metrics registry."""
    if not settings.auth_enable:
        return
    keys = load_keys(settings.auth_keys_file) if settings.auth_keys_file else EMPTY_STORE
    oidc = None
    if settings.auth_oidc_issuer and settings.auth_oidc_client_id:
        oidc = OidcVerifier(settings.auth_oidc_issuer, settings.auth_oidc_client_id, leeway=settings.auth_oidc_leeway)
    app[ACCESS] = Access(
        keys,
        settings.auth_keys_file,
        oidc,
        settings.auth_oidc_policy_claim,
        settings.auth_oidc_name_claim,
        reserve_output=settings.ratelimit_reserve_output_tokens,
    )
    app.cleanup_ctx.append(_lifecycle(settings, register))
    app.on_response_prepare.append(_ratelimit_headers)


def make_limiter(settings: Settings, clock: Clock = time.time) -> Limiter:
    if settings.redis_url:
        return RedisLimiter(
            settings.redis_url,
            fail_open=settings.ratelimit_fail_open,
            timeout=settings.redis_timeout,
            retry_interval=settings.redis_retry_interval,
            clock=clock,
        )
    return MemoryLimiter(clock=clock)


def _lifecycle(
    settings: Settings, register: Callable[[LimiterCollector], None] | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        access = app[ACCESS]
        access.limiter = make_limiter(settings, app.get(CLOCK, time.time))
        if register is not None and isinstance(access.limiter, RedisLimiter):
            register(LimiterCollector(access.limiter.health))
        if access.oidc is not None:
            await access.oidc.start()
        log.info(
            "client auth on",
            keys=len(access.keys),
            oidc=access.oidc is not None,
            limits="redis" if settings.redis_url else "memory",
        )
        try:
            async with running(_background(access, settings.auth_keys_reload_interval)):
                yield
        finally:
            if access.charges:
                # Charges still on their way get the limiter's own time-out to land.
                await asyncio.wait(list(access.charges), timeout=settings.redis_timeout * 2)
            await access.limiter.close()
            if access.oidc is not None:
                await access.oidc.close()

    return context


async def _background(access: Access, interval: float) -> None:
    """Fetch the issuer's keys once early (a log line says if it is down), then follow the keys file."""
    if access.oidc is not None:
        with contextlib.suppress(TokenRejected):
            await access.oidc.prefetch()
    if access.keys_file is None:
        return
    while True:
        await asyncio.sleep(interval)
        await reload_keys(access)


async def reload_keys(access: Access) -> bool:
    """Take a changed keys file (a rotated Secret); a broken one is logged and the old keys stay."""
    path = access.keys_file
    if path is None:
        return False
    version = await asyncio.to_thread(stamp, path)
    if version is None:
        log.error("keys file unreadable; keeping the loaded keys", path=path)
        return False
    if version == access.keys.stamp:
        return False
    try:
        access.keys = await asyncio.to_thread(load_keys, path)
    except Exception as exc:  # ConfigError, or a file replaced mid-read: either way the old keys stay
        log.error("keys file rejected; keeping the loaded keys", path=path, error=str(exc))
        return False
    log.info("keys file reloaded", path=path, keys=len(access.keys))
    return True


def _rate_limited(decision: Decision, kind: str | None = None) -> RateLimited:
    """429 naming the spent budget: `kind` when the caller knows it, else the request budget if it is out."""
    if kind is None:
        kind = "requests" if decision.requests is not None and decision.requests.remaining < 1 else "tokens"
    requests_out = kind == "requests"
    window = decision.requests if requests_out else decision.tokens
    limit = f" of {window.limit} {kind} per minute" if window is not None else ""
    error = RateLimited(
        f"rate limit reached: the limit{limit} is spent; retry in {decision.headers()['Retry-After']}s",
        headers=decision.headers(),
    )
    error.type = kind
    return error


def _resource(request: web.Request) -> str | None:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else None


async def identify(access: Access, headers: CIMultiDictProxy[str]) -> Client:
    token = credential(headers)
    if access.oidc is not None and looks_like_jwt(token):
        try:
            claims = await access.oidc.verify(token)
        except TokenRejected as exc:
            raise Unauthenticated(str(exc)) from None
        return _token_client(access, claims)
    entry = access.keys.find(token)
    if entry is None:
        raise Unauthenticated("invalid API key")
    if entry.revoked:
        raise Unauthenticated("this API key has been revoked")
    return Client(entry.name, entry.policy, f"key:{entry.name}")


def credential(headers: CIMultiDictProxy[str]) -> str:
    """The one credential a request carries, as `Authorization: Bearer <key>` or `X-API-Key: <key>` (both alike)."""
    authorization = headers.getall("Authorization", [])
    api_key = headers.getall("X-API-Key", [])
    if len(authorization) + len(api_key) == 0:
        raise Unauthenticated(
            "missing credentials: send Authorization: Bearer <key> or X-API-Key: <key>", invalid=False
        )
    if len(authorization) > 1 or len(api_key) > 1:
        raise Unauthenticated("send one credential")
    values = []
    if authorization:
        scheme, _, value = authorization[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must be Bearer <key>")
        values.append(value.strip())
    if api_key:
        values.append(api_key[0].strip())
    token = values[0]
    if not token or len(token) > MAX_CREDENTIAL:
        raise Unauthenticated("invalid API key")
    if len(values) == 2 and not hmac.compare_digest(_bytes(values[0]), _bytes(values[1])):
        raise Unauthenticated("Authorization and X-API-Key carry different credentials")
    return token


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _token_client(access: Access, claims: dict[str, Any]) -> Client:
    subject = claims.get(access.name_claim)
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated(f"the token has no {access.name_claim!r} claim")
    name = f"oidc:{subject[:128]}"
    return Client(name, _claimed_policy(access, claims), name)


def _claimed_policy(access: Access, claims: dict[str, Any]) -> ClientPolicy:
    """The policy a token's claim names (a string, or the first known name in a list); `default` without one."""
    claimed = claims.get(access.policy_claim) if access.policy_claim else None
    if claimed is None:
        return access.keys.default_policy
    names: Iterable[Any] = claimed if isinstance(claimed, list) else [claimed]
    for name in names:
        if isinstance(name, str) and name in access.keys.policies:
            return access.keys.policies[name]
    raise Forbidden("the token's policy claim names no policy of this gateway", code="unknown_policy")


def client_policy(request: web.Request) -> ClientPolicy:
    client = request.get(CLIENT)
    return client.policy if client is not None else UNRESTRICTED


def allows_model(request: web.Request, provider_id: str, model: str, names: Names) -> bool:
    """Does the client's policy allow the route (the provider, the model name it receives)? `names` are the provider
    names of the request's table (`ProviderTable.names`), which say which policy entries name a provider."""
    policy = client_policy(request)
    return policy is UNRESTRICTED or policy.allows(provider_id, model, names)


def check_model(request: web.Request, provider_id: str, model: str, names: Names) -> None:
    """403 when the client's policy does not allow this model (after the gateway-wide filter passed it)."""
    policy = client_policy(request)
    if policy is not UNRESTRICTED and not policy.allows(provider_id, model, names):
        raise ModelNotAllowed(f"model '{provider_id}/{model}' is not allowed for this client")


def check_provider(request: web.Request, provider_id: str) -> None:
    """403 when the client's policy does not allow this provider, for a call that names no model (a follow-up on a
    response the provider holds)."""
    if not client_policy(request).allows_provider(provider_id):
        raise Forbidden(f"provider {provider_id!r} is not allowed for this client", code="provider_not_allowed")


def check_proxy(request: web.Request, provider_id: str) -> None:
    """A raw call names no model the gateway can judge: a policy restricting models has no proxy unless it says
    `proxy: true` (keys.py), whatever provider is named."""
    policy = client_policy(request)
    if not policy.allows_provider(provider_id):
        raise Forbidden(f"provider {provider_id!r} is not allowed for this client", code="provider_not_allowed")
    if not policy.proxy:
        raise Forbidden("raw /proxy calls are not allowed for this client", code="proxy_not_allowed")


def visible_models(request: web.Request, data: list[dict[str, Any]], names: Names) -> list[dict[str, Any]]:
    """A model list without what the client may not use (ids are `provider/model`, `served_by` the provider), each
    judged like a chat to that provider with that model; `names` as in `allows_model`."""
    policy = client_policy(request)
    if policy is UNRESTRICTED:
        return data
    out = []
    for model in data:
        provider = str(model.get("served_by", ""))
        bare = str(model["id"])[len(provider) + 1 :]
        if policy.allows(provider, bare, names):
            out.append(model)
    return out


async def _ratelimit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Just before any answer starts (streams too): the client's own budget replaces a provider's figures."""
    decision = request.get(DECISION)
    if decision is None:
        return
    for name in [n for n in response.headers if n.lower().startswith("x-ratelimit-")]:
        del response.headers[name]
    response.headers.update(decision.headers())


def _output_allowance(body: dict[str, Any], default: int) -> int:
    """The body's own cap on output tokens when it sets a sane one, else `default`."""
    for name in _OUTPUT_CAPS:
        value = body.get(name)
        if type(value) is int and 0 <= value <= MAX_TOKENS:
            return value
    return default
