"""The app factory: middleware order, the route table and the resources the app owns. No global state."""

from __future__ import annotations

from aiohttp import web

from gateway.access import auth
from gateway.api import handlers
from gateway.config.providers import ProviderTable
from gateway.config.settings import Settings
from gateway.errors import render_errors
from gateway.runtime import reload
from gateway.runtime.state import STATE, GatewayState
from gateway.telemetry import bad_requests, metrics
from gateway.telemetry.observe import observer
from gateway.upstream import call as upstream

PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def create_app(settings: Settings, table: ProviderTable) -> web.Application:
    # observability (issue 3): metrics only with TELEMETRY_ENABLE; the access log and request ids always.
    gateway_metrics: metrics.GatewayMetrics | None = None
    if settings.telemetry_enable:
        gateway_metrics = metrics.GatewayMetrics(
            metrics.ModelLabels.of(settings.allowed_models, table), lambda: app[STATE].table
        )
        gateway_metrics.config_loaded(True)
    app = web.Application(
        # Outermost first: the record exists before anything runs; errors are rendered inside it.
        middlewares=[
            # The record, the request id, metrics and the access line; outside render_errors so it sees every final
            # status.
            observer(settings, gateway_metrics),
            render_errors,
            # access control (issue 5): inside render_errors, so 401/402/403/429 are envelopes and are measured.
            *auth.middlewares(settings),
        ],
        client_max_size=settings.max_request_body_size,
    )
    app[STATE] = GatewayState(settings, table)
    auth.setup(app, settings)  # access control (issue 5): keys file, OIDC, limiter lifecycle
    app.cleanup_ctx.append(upstream.pool_context(settings))
    if gateway_metrics is not None:
        app[metrics.METRICS] = gateway_metrics
        app.cleanup_ctx.append(metrics.listener(settings))
        # Each hot reload of the table (resilience, issue 6) counts in llmgw_config_loads.
        reloaded, state = gateway_metrics.table_reloaded, app[STATE]
        state.reload_listeners.append(lambda outcome: reloaded(outcome, state.table))
    # Hot reload of the provider table on SIGHUP and on file changes (resilience, issue 6).
    app.cleanup_ctx.append(reload.reload_context())
    # Malformed HTTP from clients: one warning line each, not an ERROR traceback (resilience, issue 6).
    app.cleanup_ctx.append(bad_requests.quiet_refusals)
    app.router.add_routes(
        [
            web.get("/health", handlers.health),
            web.get("/ready", handlers.ready),
            web.get("/v1/models", handlers.list_models),
            web.post("/v1/chat/completions", handlers.chat_completions),
            *(web.route(method, "/proxy/{provider}/{path:[\\s\\S]*}", handlers.proxy) for method in PROXY_METHODS),
        ]
    )
    return app
