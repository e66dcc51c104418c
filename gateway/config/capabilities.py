"""What a provider's models can do (seed 002): service type, input and output modalities, features, context window;
from the table's `models:` entries of a provider (names or glob patterns), with defaults inferred from the
endpoints the provider declares. What neither says stays unknown: never guessed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_TYPES = ("llm", "embedding", "image", "stt", "tts", "moderation", "rerank")

# The service type of a model that serves an endpoint (by its table name); the list endpoint has none.
ENDPOINT_SERVICE: Mapping[str, str] = {
    "chat": "llm",
    "completions": "llm",
    "responses": "llm",
    "messages": "llm",
    "embeddings": "embedding",
    "images_generations": "image",
    "images_edits": "image",
    "images_variations": "image",
    "audio_transcriptions": "stt",
    "audio_translations": "stt",
    "audio_speech": "tts",
    "moderations": "moderation",
    "rerank": "rerank",
}

# What each service type takes and gives, where the type alone says it (an entry's own lists replace these).
_MODALITIES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llm": (("text",), ("text",)),
    "embedding": (("text",), ("embedding",)),
    "image": (("text",), ("image",)),
    "stt": (("audio",), ("text",)),
    "tts": (("text",), ("audio",)),
    "moderation": (("text",), ("text",)),
    "rerank": (("text",), ("text",)),
}

_GLOB = re.compile(r"[*?\[]")
_MEMO_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One model's capabilities; None is unknown."""

    service_type: str | None = None
    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None
    supported_features: tuple[str, ...] | None = None
    context_window: int | None = None

    def fields(self) -> dict[str, Any]:
        """The known ones, as a /v1/models entry carries them."""
        known: dict[str, Any] = {}
        if self.service_type is not None:
            known["service_type"] = self.service_type
        if self.input_modalities is not None:
            known["input_modalities"] = list(self.input_modalities)
        if self.output_modalities is not None:
            known["output_modalities"] = list(self.output_modalities)
        if self.supported_features is not None:
            known["supported_features"] = list(self.supported_features)
        if self.context_window is not None:
            known["context_window"] = self.context_window
        return known


UNKNOWN = Capabilities()


@dataclass(frozen=True, slots=True)
class Catalog:
    """A provider's model capabilities: exact names, then glob patterns in the table's order (the first that
    matches wins), then the default inferred from its endpoints."""

    exact: Mapping[str, Capabilities] = field(default_factory=dict)
    patterns: tuple[tuple[re.Pattern[str], Capabilities], ...] = ()
    default: Capabilities = UNKNOWN
    # The provider's endpoints whose requests need no type check: made at load, so the common request (a chat-only
    # provider's chat) pays one set lookup, not a lookup by model name.
    unchecked: frozenset[str] = frozenset()
    # model name -> its capabilities: traffic names a few models; bounded, and a reload brings a fresh one.
    memo: dict[str, Capabilities] = field(default_factory=dict, repr=False, compare=False)

    def of(self, model: str) -> Capabilities:
        if not self.patterns:
            return self.exact.get(model, self.default) if self.exact else self.default
        memo = self.memo
        found = memo.get(model)
        if found is None:
            found = self.exact.get(model) or next(
                (caps for pattern, caps in self.patterns if pattern.fullmatch(model)), self.default
            )
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[model] = found
        return found


def wrong_type(provider: str, catalog: Catalog, model: str, operation: str) -> str | None:
    """Why `model` of `provider` cannot serve `operation`: its known service type is not the one the operation
    needs; None when it is, or when either is unknown."""
    if operation in catalog.unchecked:
        return None
    needed = ENDPOINT_SERVICE.get(operation)
    own = catalog.of(model).service_type
    if own is None or needed is None or own == needed:
        return None
    return f"model {model!r} of provider {provider!r} is of service type {own}; {operation} needs service type {needed}"


def inferred_type(endpoints: Iterable[str]) -> str | None:
    """The service type every model of a provider has, when its endpoints say one only (a chat-only provider's
    models are LLMs); None when they say several or none."""
    types = {ENDPOINT_SERVICE[name] for name in endpoints if name in ENDPOINT_SERVICE}
    return types.pop() if len(types) == 1 else None


def with_defaults(service_type: str | None, entry: Mapping[str, Any] | None = None) -> Capabilities:
    """An entry's capabilities, its service type's modalities filling what it does not say."""
    entry = entry or {}
    kind = entry.get("service_type", service_type)
    inputs, outputs = _MODALITIES.get(kind, (None, None)) if kind is not None else (None, None)
    features = entry.get("supported_features")
    return Capabilities(
        service_type=kind,
        input_modalities=tuple(entry["input_modalities"]) if "input_modalities" in entry else inputs,
        output_modalities=tuple(entry["output_modalities"]) if "output_modalities" in entry else outputs,
        supported_features=tuple(features) if features is not None else None,
        context_window=entry.get("context_window"),
    )


def catalog(models: Iterable[str | Mapping[str, Any]], endpoints: Iterable[str]) -> Catalog:
    """A provider's catalog from its table entry's `models` (names, or objects with an `id` that may be a glob
    pattern) and the endpoints it declares."""
    default_type = inferred_type(endpoints)
    exact: dict[str, Capabilities] = {}
    patterns: list[tuple[re.Pattern[str], Capabilities]] = []
    for item in models:
        if isinstance(item, str):
            exact.setdefault(item, with_defaults(default_type))
            continue
        caps = with_defaults(default_type, item)
        name: str = item["id"]
        if _GLOB.search(name):
            patterns.append((re.compile(fnmatch.translate(name)), caps))
        else:
            exact.setdefault(name, caps)
    names = list(endpoints)
    if exact or patterns:
        unchecked = frozenset(name for name in names if name not in ENDPOINT_SERVICE)
    else:
        unchecked = frozenset(
            name for name in names if default_type is None or ENDPOINT_SERVICE.get(name, default_type) == default_type
        )
    return Catalog(exact, tuple(patterns), with_defaults(default_type), unchecked)


def is_exact(name: str) -> bool:
    """A model name, not a glob pattern."""
    return not _GLOB.search(name)
