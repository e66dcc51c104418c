"""What may pass: the allowed/disallowed model lists and vision gating. Pure, built once per table load."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.config.providers import Provider
from gateway.errors import InvalidRequest, ModelNotAllowed

IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


Names = Mapping[str, Provider]  # a table's provider names, id and aliases in lower case (ProviderTable.names)
_NO_NAMES: Names = MappingProxyType({})
_BOUND_KEPT = 4  # tables a filter keeps its bound copies for: the live one and any a request still finishes on


@dataclass(frozen=True, slots=True)
class _Matcher:
    """Entries sorted by what they are matched against: a provider-qualified entry only the full `provider/model`
    id, any other entry the full id and the bare model name."""

    full_exact: frozenset[str]
    full_pattern: re.Pattern[str] | None
    bare_exact: frozenset[str]
    bare_pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, entries: Iterable[str], names: Names) -> _Matcher:
        full: list[str] = []
        bare: list[str] = []
        for entry in entries:
            lowered = entry.lower()
            head, slash, tail = lowered.partition("/")
            provider = names.get(head) if slash else None
            if provider is None:
                full.append(lowered)
                bare.append(lowered)
            else:
                full.append(f"{provider.id}/{tail}")  # an alias means its provider's id
        return cls(*_compiled(full), *_compiled(bare))

    def __bool__(self) -> bool:
        return bool(self.full_exact) or self.full_pattern is not None

    def matches(self, full: str, bare: str) -> bool:
        if full in self.full_exact or bare in self.bare_exact:
            return True
        if self.full_pattern is not None and self.full_pattern.match(full):
            return True
        return self.bare_pattern is not None and self.bare_pattern.match(bare) is not None


def _compiled(entries: list[str]) -> tuple[frozenset[str], re.Pattern[str] | None]:
    globs = [fnmatch.translate(e) for e in entries if _is_glob(e)]
    return frozenset(e for e in entries if not _is_glob(e)), re.compile("|".join(globs)) if globs else None


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """ALLOWED_MODELS / DISALLOWED_MODELS (and a client policy's models): a non-empty allow list wins and the deny
    list is then ignored. `allows` judges the route taken: the provider and the model name it receives.

    Entries are compared in lower case and `*` globs work. An entry whose part before the first `/` is a provider
    name of `names` (its id or an alias) is qualified: it matches only that provider's `provider/model` id, never a
    bare name (which may hold a slash: Groq's `openai/gpt-oss-120b`) on another provider. Any other entry matches
    the bare model name on any provider, or a full id. `names` are the table's; `bind` judges the same entries
    against another table's names (a client policy, loaded apart from the table, against the live one).
    """

    allow: _Matcher
    deny: _Matcher
    empty: bool  # no lists: everything passes, answered at once
    allowed: tuple[str, ...]
    disallowed: tuple[str, ...]
    names: Names = field(compare=False, repr=False)  # the names the entries were read against
    # names' id -> (names, this filter bound to them): a few tables' worth, kept while they are in use.
    bound: dict[int, tuple[Names, ModelFilter]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, allowed: Iterable[str] = (), disallowed: Iterable[str] = (), names: Names = _NO_NAMES) -> ModelFilter:
        allowed, disallowed = tuple(allowed), tuple(disallowed)
        allow, deny = _Matcher.of(allowed, names), _Matcher.of(disallowed, names)
        return cls(allow, deny, not (allow or deny), allowed, disallowed, names)

    def bind(self, names: Names) -> ModelFilter:
        """These entries judged against `names` (a table's provider names); built once per table."""
        if self.empty or names is self.names:
            return self
        bound = self.bound
        kept = bound.get(id(names))
        if kept is not None and kept[0] is names:
            return kept[1]
        made = ModelFilter.of(self.allowed, self.disallowed, names)
        if len(bound) >= _BOUND_KEPT:
            bound.clear()
        bound[id(names)] = (names, made)
        return made

    def allows(self, provider_id: str, model: str) -> bool:
        if self.empty:
            return True  # no lists: the common case, answered without building names
        bare = model.lower()
        full = f"{provider_id}/{bare}"
        if self.allow:
            return self.allow.matches(full, bare)
        return not self.deny.matches(full, bare)

    def check(self, provider_id: str, model: str) -> None:
        if not self.allows(provider_id, model):
            raise ModelNotAllowed(f"model '{provider_id}/{model}' is not allowed on this gateway")


def has_image_input(body: Mapping[str, Any]) -> bool:
    """Whether any message carries an image part: chat's and Anthropic's `messages`, the Responses API's `input`
    items, and the parts a tool result holds inside a part (Anthropic's `tool_result`)."""
    return _has_image(body.get("messages")) or _has_image(body.get("input"))


def _has_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") in IMAGE_PART_TYPES:
                        return True
                    inner = part.get("content")
                    if isinstance(inner, list) and any(
                        isinstance(p, dict) and p.get("type") in IMAGE_PART_TYPES for p in inner
                    ):
                        return True
    return False


def check_vision(enable_vision: bool, provider: Provider, body: Mapping[str, Any]) -> None:
    if not has_image_input(body):
        return
    if not enable_vision:
        raise InvalidRequest(
            "image inputs are disabled on this gateway (set ENABLE_VISION=true to allow them)",
            code="vision_disabled",
        )
    if not provider.supports_vision:
        raise InvalidRequest(f"provider {provider.id!r} does not accept image inputs", code="vision_not_supported")
