"""The app factory: middleware order, the route table, the sinks of finished requests and the resources the app
owns. No global state."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.access import auth
from gateway.api.errors import error_renderer
from gateway.api.inbound import BODY_BUDGET, BodyBudget
from gateway.api.routes import ROUTES, ApiRoute, mount
from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.exchange import Sink
from gateway.mcp import hub as mcp_hub
from gateway.runtime import registry, reload
from gateway.runtime.state import STATE, GatewayState
from gateway.telemetry import access_log, bad_requests, logs, metrics
from gateway.telemetry.observe import observer
from gateway.upstream.call import transport_context
from gateway.usage import service as usage


def create_app(settings: Settings, table: ProviderTable, routes: Sequence[ApiRoute] = ROUTES) -> web.Application:
    app = web.Application(client_max_size=settings.max_request_body_size)
    mounted = mount(app.router, routes)
    # Metrics only with TELEMETRY_ENABLE; the access line and request ids always.
    gateway_metrics: metrics.GatewayMetrics | None = None
    if settings.telemetry_enable:
        gateway_metrics = metrics.GatewayMetrics(
            metrics.ModelLabels.of(settings.allowed_models, table),
            lambda: app[STATE].table,
            mounted.genai_operations,
            lambda: app[STATE].fleet.live,
            mcp=settings.mcp_enable,
        )
        gateway_metrics.config_loaded(True)
    # What reads each finished request, in order; none of them delays the answer (they run after it is out).
    sinks: list[Sink] = []
    if gateway_metrics is not None:
        sinks.append(gateway_metrics.sink)
    if settings.environment == "development":
        sinks.append(access_log.body_log(settings.debug_content_truncate_words, settings.debug_max_messages))
    sinks.append(access_log.write)
    if settings.auth_enable:
        sinks.append(auth.charge_tokens)
    # The usage store (USAGE_STORE): its sink only queues a row; the writer is the app's background work.
    redactor = logs.active_redactor()
    usage_sink = usage.setup(
        app,
        settings,
        lambda: app[STATE].table,
        redactor.clean,
        access_log.stored_bodies(settings.debug_content_truncate_words, settings.debug_max_messages, redactor),
        mounted.genai_operations,
        gateway_metrics.registry.register if gateway_metrics is not None else None,
    )
    if usage_sink is not None:
        sinks.append(usage_sink)
    # Outermost first: the record exists before anything runs, so it sees every final status; errors are
    # rendered inside it in the route's dialect; client auth inside that, so 401/402/403/429 are envelopes too.
    app.middlewares.extend(
        [
            observer(mounted.operations, sinks, gateway_metrics.live if gateway_metrics is not None else None),
            error_renderer(mounted.dialects, mounted.prefixes),
            *auth.middlewares(settings, mounted.public, mounted.not_inference),
        ]
    )
    app[STATE] = GatewayState(settings, table)
    # The Inference API's registered providers (with USAGE_STORE): read in the background, joined to the table.
    registry.setup(app, gateway_metrics.registry.register if gateway_metrics is not None else None)
    app[BODY_BUDGET] = BodyBudget(settings.max_body_memory)
    auth.setup(app, settings, gateway_metrics.registry.register if gateway_metrics is not None else None)
    app.cleanup_ctx.append(transport_context(settings))
    # MCP servers' tools (with MCP_ENABLE): connected in the background, never awaited by start-up or requests.
    mcp_hub.setup(app, settings, gateway_metrics.registry.register if gateway_metrics is not None else None)
    if gateway_metrics is not None:
        app[metrics.METRICS] = gateway_metrics
        app.cleanup_ctx.append(metrics.listener(settings))
        # Each hot reload of the table counts in llmgw_config_loads.
        reloaded, state = gateway_metrics.table_reloaded, app[STATE]
        state.reload_listeners.append(lambda outcome: reloaded(outcome, state.table))
    # Hot reload of the provider table on SIGHUP and on file changes.
    app.cleanup_ctx.append(reload.reload_context())
    # Malformed HTTP from clients: one warning line each, not an ERROR traceback.
    app.cleanup_ctx.append(bad_requests.quiet_refusals)
    return app
