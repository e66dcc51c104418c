"""The app factory: middleware order, the route table and the resources the app owns. No global state."""

from __future__ import annotations

from aiohttp import web

from . import auth, handlers, upstream
from .errors import render_errors
from .exchange import track
from .providers import ProviderTable
from .settings import Settings
from .state import STATE, GatewayState

PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def create_app(settings: Settings, table: ProviderTable) -> web.Application:
    app = web.Application(
        # Outermost first: the record exists before anything runs; errors are rendered inside it.
        middlewares=[
            track,
            render_errors,
            # access control (issue 5): inside render_errors, so 401/402/403/429 are envelopes and are measured.
            *auth.middlewares(settings),
        ],
        client_max_size=settings.max_request_body_size,
    )
    app[STATE] = GatewayState(settings, table)
    auth.setup(app, settings)  # access control (issue 5): keys file, OIDC, limiter lifecycle
    app.cleanup_ctx.append(upstream.session_context(settings))
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
