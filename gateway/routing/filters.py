"""What may pass: the allowed/disallowed model lists and vision gating. Pure, built once per table load."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.providers import Provider
from gateway.errors import InvalidRequest, ModelNotAllowed

IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


@dataclass(frozen=True, slots=True)
class _Matcher:
    exact: frozenset[str]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, entries: Iterable[str]) -> _Matcher:
        exact = {e.lower() for e in entries if not _is_glob(e)}
        globs = [fnmatch.translate(e.lower()) for e in entries if _is_glob(e)]
        return cls(frozenset(exact), re.compile("|".join(globs)) if globs else None)

    def __bool__(self) -> bool:
        return bool(self.exact) or self.pattern is not None

    def matches(self, *candidates: str) -> bool:
        for candidate in candidates:
            if candidate in self.exact or (self.pattern is not None and self.pattern.match(candidate)):
                return True
        return False


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """ALLOWED_MODELS / DISALLOWED_MODELS: a non-empty allow list wins and the deny list is then ignored.

    An entry matches, case-insensitively, the full `provider/model` id or the bare model name; `*` globs work.
    """

    allow: _Matcher
    deny: _Matcher

    @classmethod
    def of(cls, allowed: Iterable[str] = (), disallowed: Iterable[str] = ()) -> ModelFilter:
        return cls(_Matcher.of(allowed), _Matcher.of(disallowed))

    def allows(self, provider_id: str, model: str) -> bool:
        if not (self.allow.exact or self.allow.pattern or self.deny.exact or self.deny.pattern):
            return True  # no lists: the common case, answered without building names
        bare = model.lower()
        full = f"{provider_id}/{bare}"
        if self.allow:
            return self.allow.matches(full, bare)
        return not (self.deny and self.deny.matches(full, bare))

    def check(self, provider_id: str, model: str) -> None:
        if not self.allows(provider_id, model):
            raise ModelNotAllowed(f"model '{provider_id}/{model}' is not allowed on this gateway")


def has_image_input(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES:
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
