"""API dialects: how each family of clients (OpenAI's SDKs, Anthropic's, ...) shapes requests, answers and
errors. Pure translators, testable without sockets; the route table names a dialect per route and everything that
speaks to that route's client goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.dialects import anthropic, envelope, openai
from gateway.dialects.base import Dialect

__all__ = ["DEFAULT", "DIALECTS", "Dialect"]

DIALECTS: Mapping[str, Dialect] = MappingProxyType(
    {d.name: d for d in (openai.DIALECT, anthropic.DIALECT, envelope.DIALECT)}
)
# What a request that matched no route hears: the API most clients speak.
DEFAULT = openai.DIALECT
