"""The console: `/ui` (static pages, served under a strict Content-Security-Policy) and the
admin JSON it reads, `GET /admin/overview` and `GET /admin/errors` (admin key only). With
REDIS_URL their charts, cache counts and last errors are the fleet's (`recent_fleet.py`: every
live replica's, merged at each read), else, or while Redis does not answer, this replica's; the
JSON's `scope` says which.

The pages are files in `web/ui/`, read once when the app is built; no build step, nothing from
outside. The key a page signs in with lives in the tab's sessionStorage and goes out as
`Authorization: Bearer`: no cookie is ever set, so no other site can act with it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

import msgspec
from aiohttp import web

from modelrouter.actors.system import ProviderView
from modelrouter.errors import ApiError
from modelrouter.observability.recent import LAST_5M, LAST_60M, ErrorEntry, Recent, Series
from modelrouter.observability.recent_fleet import RecentFleet
from modelrouter.schemas import json_encoder
from modelrouter.state.connect import connect
from modelrouter.web.admin import require_admin
from modelrouter.web.history import HISTORY
from modelrouter.web.runtime import RECENT, RUNTIME, SETTINGS

Scope = Literal["fleet", "replica"]
# No inline script or style, nothing from another origin, never in a frame.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
UI_FILES = web.AppKey("ui_files", dict)
RECENT_FLEET = web.AppKey("recent_fleet", RecentFleet)  # with REDIS_URL: the fleet's figures


# -- the JSON ------------------------------------------------------------------------------------
class Scopes(msgspec.Struct, frozen=True):
    """Where each figure comes from: `fleet` when shared state (Redis) holds it, else this
    replica's own."""

    health: Scope
    rate_budget: Scope
    in_flight: Scope
    charts: Scope
    cache: Scope
    errors: Scope


class DeploymentOverview(msgspec.Struct, frozen=True):
    name: str
    state: Literal["ok", "half_open", "blacklisted", "down"]
    blacklisted_until: str | None  # ISO 8601, while blacklisted
    failures: int  # consecutive: the backoff level
    last_reason: str | None
    in_flight: int
    rate_limit: int | None  # requests per minute; None: unlimited
    rate_budget_used: float | None  # 0..1 at its last admission; None: unlimited or unused
    last_5m: Series  # 10-second steps
    last_60m: Series  # 1-minute steps


class CacheOverview(msgspec.Struct, frozen=True):
    mode: str  # off, memory, redis, degraded
    hits: int
    misses: int  # misses and bypasses
    hit_ratio: float | None


class Overview(msgspec.Struct, frozen=True):
    generated_at: str
    scope: Scopes
    state_backend: str
    requests_in_flight: int
    history: str  # off, starting, ok, degraded
    cache: CacheOverview
    deployments: list[DeploymentOverview]


class ErrorList(msgspec.Struct, frozen=True):
    """`GET /admin/errors`: the last failed requests, newest first (no message, no prompt)."""

    scope: Scope
    data: list[ErrorEntry]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def deployment(view: ProviderView, charts: tuple[Series, Series]) -> DeploymentOverview:
    limit, remaining = view.rate_limit, view.budget_remaining
    used = None
    if limit > 0 and remaining is not None:
        used = round(min(max(1 - remaining / limit, 0.0), 1.0), 4)
    return DeploymentOverview(
        name=view.name,
        state=view.state,
        blacklisted_until=_iso(view.blacklisted_until) if view.state == "blacklisted" else None,
        failures=view.failures,
        last_reason=view.last_reason if view.failures else None,
        in_flight=view.in_flight,
        rate_limit=limit or None,
        rate_budget_used=used,
        last_5m=charts[0],
        last_60m=charts[1],
    )


def json_response(data: object) -> web.Response:
    return web.Response(body=json_encoder.encode(data), content_type="application/json")


async def overview(request: web.Request) -> web.Response:
    require_admin(request)
    view = request.app[RUNTIME].system.snapshot()
    recent = request.app[RECENT]
    history = request.app.get(HISTORY)
    shared: Scope = "fleet" if view.state_backend == "redis" else "replica"
    now = time.time()
    fleet = request.app.get(RECENT_FLEET)
    merged = None if fleet is None else await fleet.charts(now)
    if merged is None:  # no Redis, or it does not answer: this replica's own
        charts: Scope = "replica"
        hits, misses = recent.cache_hits, recent.cache_misses
        series = {p.name: _own_series(recent, p.name, now) for p in view.providers}
    else:
        charts = "fleet"
        hits, misses = merged.cache_hits, merged.cache_misses
        series = {p.name: merged.series(p.name, now) for p in view.providers}
    return json_response(
        Overview(
            generated_at=_iso(now),
            scope=Scopes(
                health=shared,
                rate_budget=shared,
                in_flight="replica",
                charts=charts,
                cache=charts,
                errors=charts,  # read likewise by `GET /admin/errors`
            ),
            state_backend=view.state_backend,
            requests_in_flight=view.requests_in_flight,
            history="off" if history is None else history.state,
            cache=CacheOverview(
                mode=view.cache,
                hits=hits,
                misses=misses,
                hit_ratio=round(hits / (hits + misses), 4) if hits + misses else None,
            ),
            deployments=[deployment(p, series[p.name]) for p in view.providers],
        )
    )


def _own_series(recent: Recent, name: str, now: float) -> tuple[Series, Series]:
    ring = recent.ring(name)
    return (
        ring.series(now, window=LAST_5M.seconds, step=LAST_5M.step),
        ring.series(now, window=LAST_60M.seconds, step=LAST_60M.step),
    )


async def errors(request: web.Request) -> web.Response:
    require_admin(request)
    fleet = request.app.get(RECENT_FLEET)
    merged = None if fleet is None else await fleet.errors()
    if merged is None:  # no Redis, or it does not answer: this replica's own
        return json_response(ErrorList("replica", list(reversed(request.app[RECENT].errors))))
    return json_response(ErrorList("fleet", merged))


async def recent_fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    """With REDIS_URL: publish this replica's recent figures for the fleet's console, and read
    the fleet's (its own client, as routing's fleet has)."""
    settings = app[SETTINGS]
    if settings.redis_url is None:
        yield
        return
    client = connect(settings.redis_url, settings.redis, name="modelrouter-console")
    fleet = app[RECENT_FLEET] = RecentFleet(client, settings.redis.key_prefix, app[RECENT])
    fleet.start()
    try:
        yield
    finally:
        await fleet.close()


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/overview", overview)
    app.router.add_get("/admin/errors", errors)
    # Only a gateway that serves the console publishes its figures for the fleet's.
    app.cleanup_ctx.append(recent_fleet_ctx)


# -- the pages -----------------------------------------------------------------------------------
def load_ui() -> dict[str, tuple[bytes, str]]:
    """Every file under `web/ui/` by its path there: (content, content type)."""
    found: dict[str, tuple[bytes, str]] = {}
    root = resources.files("modelrouter.web") / "ui"
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                pending.append((entry, f"{name}/"))
                continue
            kind = TYPES.get(name[name.rfind(".") :])
            if kind is not None:
                found[name] = (entry.read_bytes(), kind)
    return found


def _page(body: bytes, kind: str) -> web.Response:
    response = web.Response(body=body, content_type=kind, charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    return response


async def index(request: web.Request) -> web.Response:
    return _page(*request.app[UI_FILES]["index.html"])


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = request.app[UI_FILES].get(name)
    if found is None:
        raise ApiError(404, "not_found", f"no console file {name!r}")
    return _page(*found)


def add_ui_routes(app: web.Application) -> None:
    app[UI_FILES] = load_ui()
    app.router.add_get("/ui", index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{name:.+}", asset)
