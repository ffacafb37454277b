"""`GET /health` (liveness and each provider's state), `GET /ready`, `GET /metrics`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelrouter import __version__
from modelrouter.schemas import json_encoder
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.runtime import RUNTIME, Runtime


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def provider_states(runtime: Runtime) -> dict[str, dict[str, Any]]:
    now = time.time()
    states: dict[str, dict[str, Any]] = {}
    for name, actor in runtime.router.providers.items():
        state = actor.status(now)
        entry: dict[str, Any] = {"state": state, "in_flight": actor.in_flight}
        health = actor.health
        if state == "blacklisted":
            entry["blacklisted_until"] = _iso(health.blacklisted_until)
        if health.failures:
            entry["failures"] = health.failures
            entry["last_reason"] = health.last_reason
        states[name] = entry
    return states


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json_encoder.encode(data), status=status, content_type="application/json"
    )


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    backend = runtime.state.mode
    return _json(
        {
            "status": "degraded" if backend == "degraded" else "ok",
            "version": __version__,
            "state_backend": backend,
            "draining": runtime.draining,
            "providers": provider_states(runtime),
            "disabled_providers": list(runtime.settings.skipped_providers),
        }
    )


async def ready(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.draining:
        return _json({"ready": False, "reason": "draining"}, 503)
    states = provider_states(runtime)
    if not any(entry["state"] in ("ok", "half_open") for entry in states.values()):
        return _json({"ready": False, "reason": "no provider is usable", "providers": states}, 503)
    return _json({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    request.app[ACCOUNTING].drain()  # every request finished so far is in this scrape
    runtime = request.app[RUNTIME]
    now = time.time()
    router = runtime.router
    for name, actor in router.providers.items():
        runtime.metrics.set_provider_state(name, actor.status(now))
        runtime.metrics.set_mailbox_depth(name, actor.mailbox_depth)
    runtime.metrics.set_mailbox_depth(router.name, router.mailbox_depth)
    runtime.metrics.requests_in_flight.set(len(router.jobs))
    runtime.metrics.event_loop_tasks.set(len(asyncio.all_tasks()))
    for name, actor in router.providers.items():
        runtime.metrics.upstream_idle_connections.labels(name).set(actor.upstream.pool.idle)
    body, content_type = runtime.metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
