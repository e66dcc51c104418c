"""Prometheus metrics on the app's own registry: OpenTelemetry GenAI histograms in their Prometheus form plus the
gateway's own series, recorded once per request from its Exchange, served on a separate /metrics listener.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.exchange import Exchange, ToolRun
from gateway.routing.breaker import CLOSED, HALF_OPEN, OPEN
from gateway.routing.deployments import Live
from gateway.telemetry.scanners import SseUsage, UsageScanner

log = structlog.get_logger("gateway.metrics")

# OTel GenAI boundaries (semantic conventions), extended where LLM traffic runs longer or faster.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
    163.84,
    327.68,
)
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))  # 1, 4, 16 ... 67,108,864
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
# Operations that talk to a provider (the route table's inference routes) get the GenAI series; health checks and
# listings only the HTTP ones.
GENAI_OPERATIONS = frozenset({"chat", "proxy"})
# Transport failures the relay reports in Exchange.error_type; a provider's own error answer is `status`.
UPSTREAM_ERROR_KINDS = frozenset({"connect", "timeout", "truncated"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
MAX_KNOWN_MODELS = 2000
# Client names come from the keys file (bounded) or OIDC subjects (not): past this many, `other`.
MAX_CLIENT_LABELS = 1000
MAX_MODEL_LENGTH = 200


class ModelLabels:
    """The model label: a name the gateway knows (allow list, the table's `models`, a successful listing), else
    `other`, so a client can never mint new series. The known set is bounded."""

    def __init__(self, limit: int = MAX_KNOWN_MODELS) -> None:
        self.limit = limit
        self.full = False
        self._labels: dict[str, str] = {}  # lower-case `provider/model` or bare `model` -> label value

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, provider: str | None, model: str) -> None:
        if not model or len(model) > MAX_MODEL_LENGTH or any(c in model for c in "*?["):
            return
        key = f"{provider}/{model}".lower() if provider else model.lower()
        if key in self._labels or self.full:
            return
        if len(self._labels) >= self.limit:
            self.full = True
            log.warning("too many known models: further ones are counted as 'other'", limit=self.limit)
            return
        self._labels[key] = model

    def learn(self, model_ids: Iterable[str]) -> None:
        """`provider/model` ids, as a /v1/models answer lists them."""
        if self.full:
            return
        for model_id in model_ids:
            provider, _, model = model_id.partition("/")
            self.add(provider, model)

    def label(self, provider: str | None, model: str | None) -> str:
        if not model:
            return ""
        lowered = model.lower()
        found = self._labels.get(f"{provider}/{lowered}") if provider else None
        return found or self._labels.get(lowered) or OTHER

    @classmethod
    def of(cls, allowed_models: Iterable[str], table: ProviderTable) -> ModelLabels:
        labels = cls()
        for entry in allowed_models:
            head, slash, tail = entry.partition("/")
            provider = table.lookup(head) if slash else None
            if provider is not None:
                labels.add(provider.id, tail)
            else:
                labels.add(None, entry)
        labels.add_table(table)
        return labels

    def add_table(self, table: ProviderTable) -> None:
        """The `models:` the table declares (again after a reload, for providers it added), and the models of its
        model groups' deployments."""
        for provider in table.providers.values():
            for model in provider.known_models:
                self.add(provider.id, model)
        for group in table.groups.values():
            for deployment in group.deployments:
                self.add(deployment.provider, deployment.model)


@dataclass(frozen=True, slots=True)
class _GenAISeries:
    """The label children of one (operation, provider, model, error) combination, built once and reused."""

    duration: Histogram
    input_tokens: Histogram
    output_tokens: Histogram
    ttft: Histogram
    tpot: Histogram
    bytes_in: Counter
    bytes_out: Counter


@dataclass(frozen=True, slots=True)
class _HttpSeries:
    requests: Counter
    duration: Histogram


class _LiveCollector(Collector):
    """Gauges computed at scrape time from the requests in flight, so a request pays only a dict insert."""

    def __init__(self, live: dict[int, Exchange], table: Callable[[], ProviderTable]) -> None:
        self._live = live
        self._table = table

    def collect(self) -> Iterator[Metric]:
        exchanges = list(self._live.values())
        in_flight = GaugeMetricFamily("llmgw_http_requests_in_flight", "Requests being served now.")
        in_flight.add_metric([], len(exchanges))
        yield in_flight
        streams = GaugeMetricFamily(
            "llmgw_active_streams", "Streamed answers being relayed now.", labels=["gen_ai_provider_name"]
        )
        counts: dict[str, int] = {}
        for exchange in exchanges:
            # A stream is active once the provider answered and the relay started copying it.
            if exchange.stream and exchange.upstream_status is not None and exchange.provider:
                counts[exchange.provider] = counts.get(exchange.provider, 0) + 1
        for provider in self._table().providers:
            streams.add_metric([provider], counts.get(provider, 0))
        yield streams
        providers = GaugeMetricFamily("llmgw_providers", "Providers in the table, by state.", labels=["state"])
        table = self._table().providers.values()
        providers.add_metric(["served"], sum(1 for p in table if p.served))
        providers.add_metric(["unavailable"], sum(1 for p in table if not p.served))
        yield providers

    def describe(self) -> Iterator[Metric]:
        return iter(())


# A breaker's state as a number, so one series per deployment shows it and its changes graph as steps.
BREAKER_STATES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class _RoutingCollector(Collector):
    """The model groups' deployments, read at scrape time from their live state: a request pays nothing for these.
    Labelled by provider id and model name from the table (bounded by it)."""

    def __init__(self, deployments: Callable[[], Mapping[tuple[str, str], Live]]) -> None:
        self._deployments = deployments

    def collect(self) -> Iterator[Metric]:
        labels = ["gen_ai_provider_name", "gen_ai_request_model"]
        state = GaugeMetricFamily(
            "llmgw_breaker_state", "A deployment's circuit breaker: 0 closed, 1 half-open, 2 open.", labels=labels
        )
        transitions = CounterMetricFamily(
            "llmgw_breaker_transitions", "Times a deployment's breaker entered a state.", labels=[*labels, "state"]
        )
        calls = CounterMetricFamily(
            "llmgw_deployment_calls",
            "A group's deployment per request: served (its answer was relayed), failed (before the first byte; "
            "another was tried), skipped (passed over untried: policy, filter, capability).",
            labels=[*labels, "outcome"],
        )
        ttft = GaugeMetricFamily(
            "llmgw_deployment_ttft_seconds", "Average time to first token as routing sees it (EWMA).", labels=labels
        )
        rate = GaugeMetricFamily(
            "llmgw_deployment_output_tokens_per_second",
            "Average output tokens per second after the first token as routing sees it (EWMA).",
            labels=labels,
        )
        for (provider, model), live in sorted(self._deployments().items()):
            pair = [provider, model]
            breaker, measure = live.breaker, live.measure
            state.add_metric(pair, BREAKER_STATES[breaker.state])
            for name in BREAKER_STATES:
                transitions.add_metric([*pair, name], breaker.transitions[name])
            calls.add_metric([*pair, "served"], live.served)
            calls.add_metric([*pair, "failed"], live.failed)
            calls.add_metric([*pair, "skipped"], live.skipped)
            if measure.samples:
                ttft.add_metric(pair, measure.ttft)
            if measure.rate:
                rate.add_metric(pair, measure.rate)
        yield from (state, transitions, calls, ttft, rate)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ToolSeries:
    """The MCP tool calls the gateway ran: their duration (OpenTelemetry's execute_tool operation) and a count."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "gen_ai_execute_tool_duration_seconds",
            "MCP tool calls the gateway ran: time from the call to its result (or its time-out).",
            ["gen_ai_tool_name", "mcp_server", "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.calls = Counter(
            "llmgw_mcp_tool_calls",
            "MCP tool calls the gateway ran, by tool, server and outcome (ok, error, timeout, unavailable).",
            ["gen_ai_tool_name", "mcp_server", "outcome"],
            registry=registry,
        )

    def record(self, runs: Iterable[ToolRun]) -> None:
        for run in runs:
            self.duration.labels(run.tool, run.server, "" if run.outcome == "ok" else run.outcome).observe(run.seconds)
            self.calls.labels(run.tool, run.server, run.outcome).inc()


class GatewayMetrics:
    """Every series the gateway exports, on its own registry (never prometheus_client's global one)."""

    def __init__(
        self,
        models: ModelLabels,
        table: Callable[[], ProviderTable],
        genai_operations: frozenset[str] = GENAI_OPERATIONS,
        deployments: Callable[[], Mapping[tuple[str, str], Live]] | None = None,
        mcp: bool = False,
    ) -> None:
        self.registry = registry = CollectorRegistry()
        self.models = models
        self.genai_operations = genai_operations
        self.port: int | None = None  # the metrics listener's port, once it listens
        self.live: dict[int, Exchange] = {}
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to the last byte of the answer.",
            [*GENAI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request, as the provider reported them.",
            [*GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Streams: time from the request's arrival to the first chunk with content.",
            GENAI_LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Streams that report usage: (end - first token) / (output tokens - 1).",
            GENAI_LABELS,
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "llmgw_http_requests",
            "Requests answered, by route pattern, method and final status (the gateway's own errors included).",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "llmgw_http_request_duration_seconds",
            "Time from the request's arrival to the end of the answer, by route pattern and method.",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "llmgw_upstream_errors",
            "Failed provider calls: connect, timeout, truncated (broke off mid-answer) or status (answered >= 400).",
            ["gen_ai_provider_name", "kind"],
            registry=registry,
        )
        self.usage_refused = Counter(
            "llmgw_usage_refused",
            "Answers whose usage report was not believed (counts not plain integers from 0 to 10 million).",
            ["gen_ai_provider_name"],
            registry=registry,
        )
        self.relayed_bytes = Counter(
            "llmgw_relayed_bytes",
            "Body bytes relayed: request (client to provider) and response (provider to client).",
            ["gen_ai_provider_name", "direction"],
            registry=registry,
        )
        self.config_loads = Counter(
            "llmgw_config_loads", "Provider table loads, by result.", ["result"], registry=registry
        )
        # Retries of provider calls before the first byte reached the client.
        self.upstream_retries = Counter(
            "llmgw_upstream_retries",
            "Provider calls retried (failed connection or 429/502/503/504 before any byte went to the client).",
            ["gen_ai_provider_name"],
            registry=registry,
        )
        self.client_requests = Counter(
            "llmgw_client_requests",
            "Requests by authenticated client name (never its key) and final status.",
            ["client", "status"],
            registry=registry,
        )
        self.client_tokens = Counter(
            "llmgw_client_tokens",
            "Tokens the provider reported, by authenticated client name and type (input/output).",
            ["client", "gen_ai_token_type"],
            registry=registry,
        )
        self.group_requests = Counter(
            "llmgw_group_requests",
            "Requests for a model group, by group and strategy (tags joined with '+', or the group's default).",
            ["group", "strategy"],
            registry=registry,
        )
        self.group_fallbacks = Counter(
            "llmgw_group_fallbacks",
            "Deployments of a model group tried beyond the first, before the first byte reached the client.",
            ["group"],
            registry=registry,
        )
        # MCP tools the gateway ran for chat requests (gateway/mcp/loop.py), with MCP_ENABLE only; tool names come
        # from the servers' lists the gateway took, never from a client.
        self.tools = ToolSeries(registry) if mcp else None
        self._clients: set[str] = set()
        registry.register(_LiveCollector(self.live, table))
        if deployments is not None:
            registry.register(_RoutingCollector(deployments))
        self._genai: dict[tuple[str, str, str, str], _GenAISeries] = {}
        self._http: dict[tuple[str, str, int], _HttpSeries] = {}

    def config_loaded(self, ok: bool) -> None:
        self.config_loads.labels("success" if ok else "failure").inc()

    def table_reloaded(self, outcome: str, table: ProviderTable) -> None:
        """A hot reload's outcome; a new table's declared models become labels."""
        self.config_loaded(outcome == "success")
        if outcome == "success":
            self.models.add_table(table)

    def sink(self, request: web.Request, exchange: Exchange, status: int, ended: float) -> None:
        """The metrics as a sink of finished requests."""
        self.record(exchange, exchange.route, method_label(request.method), status, ended)

    def record(self, exchange: Exchange, route: str, method: str, status: int, ended: float) -> None:
        """Everything one finished request contributes; called once per request, never per chunk."""
        elapsed = ended - exchange.started
        key = (route, method, status)
        http = self._http.get(key)
        if http is None:
            http = self._http_series(*key)
        http.requests.inc()
        http.duration.observe(elapsed)
        listing = exchange.listing
        if listing is not None:
            if listing.listed and status == 200:
                self.models.learn(listing.listed)
            for provider_id, kind in listing.failures:
                self.upstream_errors.labels(provider_id, kind).inc()
        if exchange.client_name is not None:
            self._record_client(exchange, status)
        if exchange.group is not None:
            # Both labels come from the table (its group names, its strategies), never from the client.
            self.group_requests.labels(exchange.group, exchange.strategy or "").inc()
            if exchange.fallbacks:
                self.group_fallbacks.labels(exchange.group).inc(exchange.fallbacks)
        if exchange.tool_runs and self.tools is not None:
            self.tools.record(exchange.tool_runs)
        if exchange.operation not in self.genai_operations:
            return
        provider = exchange.provider or ""
        error = exchange.error_type if exchange.error_type in UPSTREAM_ERROR_KINDS else ""
        if not error and status >= 400:
            error = str(status)
        genai_key = (exchange.operation, provider, self.models.label(provider, exchange.model), error)
        series = self._genai.get(genai_key)
        if series is None:
            series = self._genai_series(*genai_key)
        series.duration.observe(elapsed)
        scanner = exchange.scanner
        usage = scanner.usage if scanner is not None else None
        if usage is not None:
            series.input_tokens.observe(usage.input_tokens)
            series.output_tokens.observe(usage.output_tokens)
        elif isinstance(scanner, UsageScanner) and scanner.refused:
            self.usage_refused.labels(provider).inc()
        if isinstance(scanner, SseUsage) and scanner.first_content_at is not None:
            series.ttft.observe(scanner.first_content_at - exchange.started)
            if usage is not None and usage.output_tokens > 1:
                series.tpot.observe((ended - scanner.first_content_at) / (usage.output_tokens - 1))
        if not provider:
            return
        if exchange.bytes_in:
            series.bytes_in.inc(exchange.bytes_in)
        if exchange.bytes_out:
            series.bytes_out.inc(exchange.bytes_out)
        if exchange.retries:
            self.upstream_retries.labels(provider).inc(exchange.retries)
        if exchange.error_type in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(provider, exchange.error_type).inc()
        elif exchange.upstream_status is not None and exchange.upstream_status >= 400:
            self.upstream_errors.labels(provider, "status").inc()

    def _record_client(self, exchange: Exchange, status: int) -> None:
        name = exchange.client_name or ""
        if name not in self._clients:
            if len(self._clients) >= MAX_CLIENT_LABELS:
                name = "other"
            else:
                self._clients.add(name)
        self.client_requests.labels(name, str(status)).inc()
        usage = exchange.scanner.usage if exchange.scanner is not None else None
        if usage is not None:
            self.client_tokens.labels(name, "input").inc(usage.input_tokens)
            self.client_tokens.labels(name, "output").inc(usage.output_tokens)

    def _http_series(self, route: str, method: str, status: int) -> _HttpSeries:
        series = _HttpSeries(
            self.http_requests.labels(route, method, str(status)), self.http_duration.labels(route, method)
        )
        self._http[(route, method, status)] = series
        return series

    def _genai_series(self, operation: str, provider: str, model: str, error: str) -> _GenAISeries:
        labels = (operation, provider, model)
        series = _GenAISeries(
            duration=self.request_duration.labels(*labels, error),
            input_tokens=self.token_usage.labels(*labels, "input"),
            output_tokens=self.token_usage.labels(*labels, "output"),
            ttft=self.ttft.labels(*labels),
            tpot=self.tpot.labels(*labels),
            bytes_in=self.relayed_bytes.labels(provider, "request"),
            bytes_out=self.relayed_bytes.labels(provider, "response"),
        )
        self._genai[(operation, provider, model, error)] = series
        return series


METRICS = web.AppKey("metrics", GatewayMetrics)


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def listener(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the /metrics listener on TELEMETRY_METRICS_PORT, apart from the API's port."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]

        async def serve(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
            )

        scrape = web.Application()
        scrape.router.add_get("/metrics", serve)
        runner = web.AppRunner(scrape, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.telemetry_metrics_port)
            await site.start()
            metrics.port = runner.addresses[0][1]
            log.info("metrics listening", url=f"http://{settings.host}:{metrics.port}/metrics")
            yield
        finally:
            await runner.cleanup()

    return context
