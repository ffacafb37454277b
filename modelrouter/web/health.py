"""`GET /health` (liveness and each provider's state), `GET /ready`, `GET /metrics`.

All three read one frozen snapshot of the actor system, never an actor.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

import msgspec
from aiohttp import web

from modelrouter import __version__
from modelrouter.actors.system import ProviderView, SystemView
from modelrouter.schemas import json_encoder
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.history import HISTORY
from modelrouter.web.runtime import RUNTIME


class ProviderHealth(msgspec.Struct, frozen=True, omit_defaults=True):
    state: Literal["ok", "half_open", "blacklisted", "down"]
    in_flight: int
    blacklisted_until: str | None = None  # ISO 8601, while blacklisted
    failures: int | None = None
    last_reason: str | None = None
    restarts: int | None = None
    # `least-busy` and `latency` with Redis: the other replicas' attempts, as last heard
    in_flight_elsewhere: int | None = None


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "degraded"]
    version: str
    state_backend: Literal["memory", "redis", "degraded"]
    cache: str  # off, memory, redis, degraded
    history: str  # off, starting, ok, degraded
    draining: bool
    requests_in_flight: int
    providers: dict[str, ProviderHealth]
    disabled_providers: list[str]
    hedges: dict[str, int] | None = None  # hedged streams by outcome (hedging configured)


class Ready(msgspec.Struct, frozen=True, omit_defaults=True):
    ready: bool
    reason: str | None = None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def provider_health(view: ProviderView) -> ProviderHealth:
    blacklisted = view.state == "blacklisted"
    return ProviderHealth(
        view.state,
        view.in_flight,
        _iso(view.blacklisted_until) if blacklisted else None,
        view.failures or None,
        view.last_reason if view.failures else None,
        view.restarts or None,
        view.in_flight_elsewhere or None,
    )


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
        Health(
            status="degraded" if degraded else "ok",
            version=__version__,
            state_backend=view.state_backend,  # type: ignore[arg-type]
            cache=view.cache,
            history=history_state,
            draining=view.draining,
            requests_in_flight=view.requests_in_flight,
            providers={p.name: provider_health(p) for p in view.providers},
            disabled_providers=list(runtime.settings.skipped_providers),
            hedges=view.hedges,
        )
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
        return _json(Ready(False, reason), 503)
    return _json(Ready(True))


async def metrics(request: web.Request) -> web.Response:
    request.app[ACCOUNTING].drain()  # every request finished so far is in this scrape
    runtime = request.app[RUNTIME]
    view = runtime.system.snapshot()
    for provider in view.providers:
        runtime.metrics.set_provider_state(provider.name, provider.state)
        runtime.metrics.set_mailbox_depth(provider.name, provider.mailbox_depth)
    runtime.metrics.requests_in_flight.set(view.requests_in_flight)
    runtime.metrics.event_loop_tasks.set(len(asyncio.all_tasks()))
    for provider in view.providers:
        runtime.metrics.upstream_idle_connections.labels(provider.name).set(
            provider.idle_connections
        )
    body, content_type = runtime.metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
