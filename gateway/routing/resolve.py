"""Which providers may serve a request, in order, and under which model name: pure functions of the table.

Order of the rules: `?provider=`, then a `provider` body field, then a `provider/model` id, then the provider the
request is pinned to (the one that holds its previous response), then a model group of the table (its name,
optionally with strategy tags: `llama@price@latency`), then the table's prefix rules. Only a provider that
declares the request's operation (its endpoint) and is configured is a candidate, and, where the table knows the
model's service type, only a model of the type the operation needs (a transcription never lands on a chat model).
`target` answers a group as the group itself (the inference handler routes among its deployments); `resolve` as
its deployments in the table's order.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.config.capabilities import wrong_type
from gateway.config.providers import STRATEGY_TAGS, Endpoint, ModelGroup, Provider, ProviderTable
from gateway.errors import InvalidRequest, NoProvider, ProviderNotConfigured


class Route(NamedTuple):
    """One candidate. Made per request: a named tuple is the cheapest record to build."""

    provider: Provider
    model: str  # the name the provider receives
    requested: str  # the name the client sent
    endpoint: Endpoint  # the provider's endpoint for the request's operation

    @property
    def model_id(self) -> str:
        return f"{self.provider.id}/{self.model}"


Candidates = tuple[Route, ...]


class Grouped(NamedTuple):
    """A request for a model group: the group, its strategy tags (canonical, joined with '+'; None: the group's
    default) and the name the client sent, tags and all."""

    group: ModelGroup
    tags: str | None
    requested: str


def resolve(
    table: ProviderTable,
    model: str,
    operation: str,
    *,
    query_provider: str | None = None,
    body_provider: str | None = None,
    pinned: str | None = None,
) -> Candidates:
    """The providers that may serve `model` for `operation`, best first (never empty); NoProvider naming the model
    when nothing matches, ProviderNotConfigured when what matches is not configured. `pinned` names the provider
    that holds state the request refers to (a previous response): when the client names no provider, only it may
    serve, so the request never lands where that state is unknown."""
    found = target(table, model, operation, query_provider=query_provider, body_provider=body_provider, pinned=pinned)
    if type(found) is Grouped:
        return _group_routes(table, found.group, model, operation)
    return found  # type: ignore[return-value]


def target(
    table: ProviderTable,
    model: str,
    operation: str,
    *,
    query_provider: str | None = None,
    body_provider: str | None = None,
    pinned: str | None = None,
) -> Candidates | Grouped:
    """As `resolve`, but a model group is answered as itself, for the handler to route among its deployments (a
    request pinned to one provider gets that provider's deployments of the group, as candidates)."""
    explicit = query_provider or body_provider
    if explicit:
        provider = table.lookup(explicit)
        if provider is None:
            raise NoProvider(f"unknown provider {explicit!r} (requested for model {model!r})")
        return (_route(provider, _strip_own_prefix(table, provider, model), model, operation),)
    head, slash, tail = model.partition("/")
    if slash:
        provider = table.lookup(head)
        if provider is not None:
            if not tail:
                raise InvalidRequest(f"model {model!r} names a provider but no model", code="invalid_model")
            return (_route(provider, tail, model, operation),)
    groups = table.groups
    pinned_to = table.lookup(pinned) if pinned else None
    if pinned_to is not None:
        return _pinned_routes(table, pinned_to, _untagged(table, model) if groups else model, operation)
    if groups:
        group = groups.get(model.lower())
        if group is not None:
            return Grouped(group, None, model)
        if "@" in model:
            name, _, tags = model.partition("@")
            group = groups.get(name.lower())
            if group is not None:
                return Grouped(group, strategy_tags(tags), model)
    provider = table.by_prefix(model)
    if provider is None:
        raise NoProvider(
            f"no provider serves model {model!r}: name one with a provider/model id "
            "(e.g. openai/gpt-4o), the ?provider= query or a provider field"
        )
    return (_route(provider, model, model, operation),)


def strategy_tags(tags: str) -> str:
    """`latency@price` (what follows a group's name and its first `@`) -> `price+latency`: each tag known, in one
    order whatever order they were written in; 400 naming the known tags otherwise."""
    written = tags.split("@")
    unknown = [tag for tag in written if tag not in STRATEGY_TAGS]
    if unknown:
        known = ", ".join(f"@{tag}" for tag in STRATEGY_TAGS)
        raise InvalidRequest(
            f"unknown strategy tag {'@' + unknown[0]!r}: the known tags are {known}", code="invalid_strategy"
        )
    return "+".join(tag for tag in STRATEGY_TAGS if tag in written)


def _untagged(table: ProviderTable, model: str) -> str:
    """A group's name without its strategy tags (checked), any other model name as it is."""
    if "@" in model and table.group(model) is None:
        name, _, tags = model.partition("@")
        if table.group(name) is not None:
            strategy_tags(tags)
            return name
    return model


def named(table: ProviderTable, name: str) -> Provider:
    """The provider a client named (id or alias, as in `?provider=` or `/proxy/{provider}`); 404 when unknown."""
    provider = table.lookup(name)
    if provider is None:
        raise NoProvider(f"unknown provider {name!r}")
    return provider


def require_served(provider: Provider) -> Provider:
    if provider.unavailable is not None:
        raise ProviderNotConfigured(f"provider {provider.id!r} is not configured: {provider.unavailable}")
    return provider


def endpoint(provider: Provider, operation: str) -> Endpoint:
    """The provider's endpoint for `operation`; 404 naming what it does serve when it declares none."""
    found = provider.endpoints.get(operation)
    if found is None:
        serves = ", ".join(sorted(provider.endpoints)) or "nothing"
        raise NoProvider(f"provider {provider.id!r} does not serve {operation}; it serves: {serves}")
    return found


def mismatch(provider: Provider, model: str, operation: str) -> str | None:
    """Why `model` cannot serve `operation` (its known service type is not the one the operation needs), or None."""
    return wrong_type(provider.id, provider.catalog, model, operation)


def _route(provider: Provider, model: str, requested: str, operation: str) -> Route:
    found = endpoint(provider, operation)
    if operation not in provider.catalog.unchecked and (wrong := mismatch(provider, model, operation)) is not None:
        raise NoProvider(wrong)
    return Route(require_served(provider), model, requested, found)


def _group_routes(table: ProviderTable, group: ModelGroup, requested: str, operation: str) -> Candidates:
    routes: list[Route] = []
    unconfigured: list[str] = []
    mismatched: list[str] = []
    for deployment in group.deployments:
        provider = table.providers[deployment.provider]
        found = provider.endpoints.get(operation)
        if found is None:
            continue
        wrong = mismatch(provider, deployment.model, operation)
        if wrong is not None:
            mismatched.append(wrong)
            continue
        if provider.unavailable is not None:
            unconfigured.append(f"{provider.id} ({provider.unavailable})")
            continue
        routes.append(Route(provider, deployment.model, requested, found))
    if routes:
        return tuple(routes)
    if unconfigured:
        raise ProviderNotConfigured(f"no provider of model {group.name!r} is configured: {'; '.join(unconfigured)}")
    if mismatched:
        raise NoProvider(f"no provider of model {group.name!r} serves {operation}: {'; '.join(mismatched)}")
    raise NoProvider(f"no provider of model {group.name!r} serves {operation}")


def _pinned_routes(table: ProviderTable, provider: Provider, model: str, operation: str) -> Candidates:
    """A model group's deployments on the pinned provider, or the model as named there."""
    group = table.group(model)
    if group is None:
        return (_route(provider, model, model, operation),)
    routes = tuple(
        _route(provider, deployment.model, model, operation)
        for deployment in group.deployments
        if deployment.provider == provider.id
    )
    if not routes:
        raise NoProvider(
            f"the previous response was made by provider {provider.id!r}, which does not serve model group "
            f"{group.name!r}; name the model as {provider.id}/<model>"
        )
    return routes


def _strip_own_prefix(table: ProviderTable, provider: Provider, model: str) -> str:
    """`?provider=openai` with `openai/gpt-4o` means gpt-4o; `groq` with `openai/gpt-oss` keeps the name."""
    head, slash, tail = model.partition("/")
    if slash and tail and table.lookup(head) is provider:
        return tail
    return model
