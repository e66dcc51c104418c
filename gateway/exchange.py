"""One request's record: what the handlers and the relay learn about a request, read once when it ends (by
metrics, the access log and rate limits), so nothing on the hot path writes a metric or a log line per chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.telemetry.scanners import UsageScanner


@dataclass(slots=True)
class Exchange:
    operation: str = "other"  # chat, models, proxy, health ...
    provider: str | None = None
    model: str | None = None  # as forwarded to the provider
    stream: bool = False
    upstream_status: int | None = None
    started: float = field(default_factory=time.perf_counter)
    first_chunk_at: float | None = None  # perf_counter when the first body byte went to the client
    bytes_out: int = 0
    scanner: UsageScanner | None = None
    client_disconnected: bool = False
    error_type: str | None = None  # set when the gateway itself failed the request (status class, kind)
    retries: int = 0
    client_name: str | None = None  # the authenticated client's name (never its key)
    # observability (issue 3)
    request_id: str = ""  # the client's X-Request-ID when sane, else generated; on the response, upstream, logs
    bytes_in: int = 0  # request body bytes read from the client
    usage_requested: bool = False  # the gateway asked the provider for stream usage the client did not ask for
    upstream_request_id: str | None = None  # the provider's own x-request-id, relayed as X-Upstream-Request-ID
    listing_failures: list[tuple[str, str]] | None = None  # /v1/models: (provider, kind) of each list that failed
    listed_models: list[str] | None = None  # `provider/model` ids a successful /v1/models answer showed
    request_body: dict[str, Any] | None = None  # the parsed chat body, for development-mode logs only


EXCHANGE = web.RequestKey("exchange", Exchange)
