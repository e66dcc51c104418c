"""The gateway's own per-request work without any I/O, timed in-process: the steps the chat handler (`api/inference.py`)
takes between reading the body and calling the provider. Robust to a busy machine, so it is what shows whether
anything on the hot path grows with the size of the provider table.
"""

from __future__ import annotations

import timeit
from collections.abc import Mapping
from pathlib import Path

from gateway.config.providers import load_table
from gateway.config.settings import Settings
from gateway.dialects import openai
from gateway.routing import filters as policy
from gateway.routing import resolve as routing
from gateway.runtime.state import GatewayState
from gateway.upstream import outbound


def decision_us(providers: Path, env: Mapping[str, str], body: bytes) -> float:
    """Microseconds per request (best of several runs) of parse, route, filter and build the upstream call."""
    state = GatewayState(Settings(), load_table(providers, env))
    # As the server's parser hands them over.
    headers = (
        (b"Host", b"127.0.0.1:8080"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Authorization", b"Bearer bench-client-key"),
        (b"User-Agent", b"bench"),
    )
    settings = state.settings

    def one() -> None:
        chat = openai.parse_chat(body)
        route = routing.resolve(state.table, chat.model, "chat", query_provider=None, body_provider=chat.provider)[0]
        state.model_filter.check(route.provider.id, route.model)
        policy.check_vision(settings.enable_vision, route.provider, chat.body)
        outbound.upstream_headers(headers, route.provider, disable_compression=settings.disable_compression)
        outbound.request_body(body, chat.body, route.model, route.requested, provider_field="provider" in chat.body)
        state.policies[route.provider.id].limits(chat.stream)

    number = 5000
    return min(timeit.repeat(one, number=number, repeat=7)) / number * 1e6
