"""Which provider serves a request, and under which model name: pure functions of the table.

Order: `?provider=`, then a `provider` body field, then a `provider/model` prefix, then the table's prefix rules.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.config.providers import Provider, ProviderTable
from gateway.errors import InvalidRequest, NoProvider, ProviderNotConfigured


class Route(NamedTuple):
    """Made per request: a named tuple costs a third of a frozen dataclass to build."""

    provider: Provider
    model: str  # the name the provider receives
    requested: str  # the name the client sent

    @property
    def model_id(self) -> str:
        return f"{self.provider.id}/{self.model}"


def resolve(
    table: ProviderTable, model: str, *, query_provider: str | None = None, body_provider: str | None = None
) -> Route:
    """Pick the provider for `model`; raise NoProvider naming the model when nothing matches."""
    explicit = query_provider or body_provider
    if explicit:
        provider = table.lookup(explicit)
        if provider is None:
            raise NoProvider(f"unknown provider {explicit!r} (requested for model {model!r})")
        return Route(require_served(provider), _strip_own_prefix(table, provider, model), model)
    head, slash, tail = model.partition("/")
    if slash:
        provider = table.lookup(head)
        if provider is not None:
            if not tail:
                raise InvalidRequest(f"model {model!r} names a provider but no model", code="invalid_model")
            return Route(require_served(provider), tail, model)
    provider = table.by_prefix(model)
    if provider is None:
        raise NoProvider(
            f"no provider serves model {model!r}: name one with a provider/model id "
            "(e.g. openai/gpt-4o), the ?provider= query or a provider field"
        )
    return Route(require_served(provider), model, model)


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


def _strip_own_prefix(table: ProviderTable, provider: Provider, model: str) -> str:
    """`?provider=openai` with `openai/gpt-4o` means gpt-4o; `groq` with `openai/gpt-oss` keeps the name."""
    head, slash, tail = model.partition("/")
    if slash and tail and table.lookup(head) is provider:
        return tail
    return model
