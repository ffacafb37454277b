"""`GET /health` (liveness and each provider's state), `GET /ready`, `GET /metrics`.

All three read one frozen snapshot of the actor system, never an actor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelrouter import __version__
from modelrouter.actors.system import ProviderView, SystemView
from modelrouter.schemas import json_encoder
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.history import HISTORY
from modelrouter.web.runtime import RUNTIME


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def provider_entry(view: ProviderView) -> dict[str, Any]:
    entry: dict[str, Any] = {"state": view.state, "in_flight": view.in_flight}
    if view.state == "blacklisted":
        entry["blacklisted_until"] = _iso(view.blacklisted_until)
    if view.failures:
        entry["failures"] = view.failures
        entry["last_reason"] = view.last_reason
    if view.restarts:
        entry["restarts"] = view.restarts
    return entry


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json_encoder.encode(data), status=status, content_type="application/json"
    )


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    view = runtime.system.snapshot()
    history = request.app.get(HISTORY)
    history_state = "off" if history is None else history.state
    degraded = "degraded" in (view.state_backend, view.cache, history_state)
    return _json(
        {
            "status": "degraded" if degraded else "ok",
            "version": __version__,
            "state_backend": view.state_backend,
            "cache": view.cache,
            "history": history_state,
            "draining": view.draining,
            "requests_in_flight": view.requests_in_flight,
            "providers": {p.name: provider_entry(p) for p in view.providers},
            "disabled_providers": list(runtime.settings.skipped_providers),
        }
    )


def not_ready_because(view: SystemView) -> str | None:
    """Why this replica should get no traffic, or None. Never because providers fail: every
    replica shares the same providers, so taking them all out of the balancer would turn a
    partial outage into a total one (provider health is on /health and in the metrics)."""
    if view.draining:
        return "draining"
    if not view.running:
        return "not running"
    if view.providers and all(p.state == "down" for p in view.providers):
        return "every provider actor is down (restarts exhausted)"
    return None


async def ready(request: web.Request) -> web.Response:
    reason = not_ready_because(request.app[RUNTIME].system.snapshot())
    if reason is not None:
        return _json({"ready": False, "reason": reason}, 503)
    return _json({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    request.app[ACCOUNTING].drain()  # every request finished so far is in this scrape
    runtime = request.app[RUNTIME]
    view = runtime.system.snapshot()
    for provider in view.providers:
        runtime.metrics.set_provider_state(provider.name, provider.state)
        runtime.metrics.set_mailbox_depth(provider.name, provider.mailbox_depth)
    runtime.metrics.requests_in_flight.set(view.requests_in_flight)
    body, content_type = runtime.metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
