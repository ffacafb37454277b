"""The aiohttp application: routes, middleware and the lifetimes of everything behind them."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from modelrouter.config import Settings
from modelrouter.observability import Metrics, tracing
from modelrouter.observability.recent import Recent
from modelrouter.web import (
    admin,
    anthropic_api,
    chat,
    console,
    embeddings,
    health,
    history,
    openai_api,
    openapi,
    reload,
    spend,
    tenancy,
)
from modelrouter.web.accounting import ACCOUNTING, Accounting
from modelrouter.web.middleware import front
from modelrouter.web.runtime import METRICS, RECENT, SETTINGS, runtime_ctx


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, env: Mapping[str, str] | None = None
) -> web.Application:
    """`env`: what a reload reads the settings from again (default: the process environment)."""
    # aiohttp rejects larger bodies itself; our handler checks Content-Length first for a clear 413.
    app = web.Application(middlewares=[front], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    # This replica's last hour, for the console: recorded only where the console is served
    # (ADMIN_API_KEY), so that a gateway without it does no work per request for nobody.
    recent = app[RECENT] = Recent()
    recording = recent if settings.tenants.admin_keys else None
    accounting = app[ACCOUNTING] = Accounting(app[METRICS], recent=recording)
    accounting.key_labels = settings.tenants.metrics_key_labels

    async def account_the_rest(_: web.Application) -> None:
        accounting.drain()

    app.on_cleanup.append(account_the_rest)
    if settings.tracing.enabled:  # first in, last out: it exports the spans of the last requests
        app.cleanup_ctx.append(tracing.lifetime(settings.tracing))
    app.cleanup_ctx.append(admin.keys_ctx)  # virtual keys (DATABASE_URL): closed last
    app.cleanup_ctx.append(tenancy.resolver_ctx)  # their lookups and pushed changes
    # The history closes after the actor system (cleanup runs in reverse): it gets the rows
    # of the requests that the system's close ended.
    app.cleanup_ctx.append(history.history_ctx)
    app.cleanup_ctx.append(spend.spend_ctx)  # likewise the spend rows; before the budgets' gate
    app.cleanup_ctx.append(runtime_ctx)
    app[reload.RELOADER] = reload.Reloader(app, reload.default_loader(env))
    app.cleanup_ctx.append(reload.reloader_ctx)  # a reload in progress ends before the system
    app.router.add_post("/chat", chat.chat)
    app.router.add_post("/stream", chat.stream)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_post("/v1/messages", anthropic_api.messages)
    app.router.add_post("/v1/messages/count_tokens", anthropic_api.count_tokens)
    app.router.add_post("/v1/embeddings", embeddings.embeddings)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get(r"/v1/models/{model:[\s\S]+}", openai_api.get_model)  # any id, even a \n
    app.router.add_get("/v1/history", history.list_history)
    app.router.add_get("/v1/history/{request_id}", history.get_history)
    app.router.add_get("/v1/spend", spend.client_spend)
    app.router.add_get("/health", health.health)
    app.router.add_get("/ready", health.ready)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/openapi.json", openapi.document)
    console.add_ui_routes(app)  # the pages; what they read needs a key of its own
    if settings.tenants.admin_keys:  # else /admin/* is not routed at all: a 404, any method
        admin.add_routes(app)
        app.router.add_post("/admin/reload", reload.admin_reload)
        console.add_admin_routes(app)
        spend.add_routes(app)
    return app
