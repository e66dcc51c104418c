"""Model capabilities from the table: names and glob patterns (first match wins), defaults inferred from the
endpoints a provider declares, unknown kept unknown; and the schema's checks of a model entry."""

from __future__ import annotations

import pytest

from gateway.config.capabilities import Capabilities, catalog, inferred_type
from gateway.errors import ConfigError
from tests.fakes.tables import entry, table_of

CHAT = ("models", "chat")
MIXED = ("models", "chat", "embeddings", "audio_transcriptions", "audio_speech")


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (("models", "chat"), "llm"),
        (("models", "chat", "completions", "responses"), "llm"),
        (("models", "audio_transcriptions", "audio_translations"), "stt"),
        (("models", "chat", "embeddings"), None),
        (("models",), None),
    ],
)
def test_the_type_a_providers_endpoints_imply(endpoints, expected) -> None:
    assert inferred_type(endpoints) == expected


def test_names_then_patterns_in_order_then_the_default() -> None:
    models = [
        "gpt-4o",
        {"id": "gpt-4o-mini-tts*", "service_type": "tts"},
        {"id": "gpt-4o*", "service_type": "llm", "supported_features": ["tools", "vision"], "context_window": 128000},
        {"id": "whisper-?", "service_type": "stt"},
        {"id": "text-embedding-3-large", "service_type": "embedding", "output_modalities": ["embedding"]},
    ]
    found = catalog(models, MIXED)
    assert found.of("gpt-4o") == Capabilities()  # a bare name says nothing, and MIXED implies no type
    assert found.of("gpt-4o-mini-tts") == Capabilities("tts", ("text",), ("audio",))
    assert found.of("gpt-4o-2024-08-06") == Capabilities("llm", ("text",), ("text",), ("tools", "vision"), 128000)
    assert found.of("whisper-1") == Capabilities("stt", ("audio",), ("text",))
    assert found.of("whisper-10").service_type is None  # `?` is one character
    assert found.of("text-embedding-3-large").fields() == {
        "service_type": "embedding",
        "input_modalities": ["text"],
        "output_modalities": ["embedding"],
    }
    assert found.of("unknown-model").fields() == {}


def test_a_chat_only_providers_models_are_llms_and_entries_refine_them() -> None:
    found = catalog([{"id": "big", "context_window": 1000000, "input_modalities": ["text", "image"]}], CHAT)
    assert found.of("anything") == Capabilities("llm", ("text",), ("text",))
    assert found.of("big") == Capabilities("llm", ("text", "image"), ("text",), None, 1000000)


def test_the_table_builds_the_catalog_and_keeps_exact_names_for_metrics() -> None:
    table = table_of(entry("p", "http://x", models=["m1", {"id": "m2", "service_type": "llm"}, {"id": "m*"}]))
    provider = table.providers["p"]
    assert provider.known_models == ("m1", "m2")
    assert provider.catalog.of("m2").service_type == "llm"


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"id": "m", "service_type": "video"}, "providers.p.models.0"),
        ({"id": "m", "input_modalities": ["smell"]}, "providers.p.models.0"),
        ({"id": "m", "context_window": 0}, "providers.p.models.0"),
        ({"service_type": "llm"}, "providers.p.models.0"),
        ({"id": "m", "colour": "blue"}, "providers.p.models.0"),
    ],
)
def test_bad_model_entries_fail_at_load_naming_the_field(model, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        table_of(entry("p", "http://x", models=[model]))
    assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems
