"""`GET /admin/spend` (admin key) and `GET /v1/spend` (a client's own), and the spend log's
lifetime in the app (`spend_ctx`).

`?group_by=key|team|provider|model|day&from=&to=`: spend and requests in [from, to) (ISO 8601
times or dates, UTC when no offset is given; default: the current UTC month up to now), from
PostgreSQL's spend rows (written within a second or so of each request), their daily totals
past SPEND_RETENTION_DAYS (a day counted when its 00:00 UTC is in the range) and the rows
waiting in the Redis spool while PostgreSQL was away (`uncounted_rows`: those a report could not
read, null when Redis did not answer). Rows grouped by key
also carry the key's name, team, budget, the spend of its current budget period (as the
budget counters have it) and when that period resets.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, get_args

import msgspec
from aiohttp import web

from modelrouter.config import Settings
from modelrouter.errors import ApiError, bad_request
from modelrouter.schemas import json_encoder
from modelrouter.state.connect import connect
from modelrouter.tenants.cost import usd
from modelrouter.tenants.keys import Key
from modelrouter.tenants.spend import GroupBy, SpendLog
from modelrouter.tenants.spend_spool import SpendSpool
from modelrouter.tenants.store import DB_ERRORS
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.admin import KEYS, admin_store
from modelrouter.web.auth import authenticate
from modelrouter.web.runtime import RUNTIME, SETTINGS, SPEND, Runtime

CLOSE_TIMEOUT = 5.0
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)


class SpendEntry(msgspec.Struct, frozen=True):
    group: str | None
    spend_usd: float
    requests: int


class KeySpendEntry(SpendEntry, frozen=True):
    """A row by key (and /v1/spend's): the key's settings and its budget's headroom, each
    null where it has none (a static key has no name; an unbudgeted key no budget)."""

    name: str | None = None
    team: str | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    period_spend_usd: float | None = None
    reset_at: datetime | None = None


class SpendReport(msgspec.Struct, frozen=True, rename={"start": "from", "end": "to"}):
    """`group_by` team, provider, model or day."""

    data: list[SpendEntry]
    start: datetime
    end: datetime
    uncounted_rows: int | None = 0


class KeySpendReport(msgspec.Struct, frozen=True, rename={"start": "from", "end": "to"}):
    """`group_by=key`, and /v1/spend."""

    data: list[KeySpendEntry]
    start: datetime
    end: datetime
    uncounted_rows: int | None = 0


async def spend_ctx(app: web.Application) -> AsyncIterator[None]:
    """With DATABASE_URL: the spend log (in the key store's database) for the app's lifetime,
    fed by the accounting; at cleanup, what is queued is written (bounded). With REDIS_URL
    too, rows the database cannot take wait in Redis (see `tenants.spend`)."""
    store = app.get(KEYS)
    if store is None:
        yield
        return
    spool = spend_spool(app[SETTINGS])
    tenants = app[SETTINGS].tenants
    spend = app[SPEND] = SpendLog(
        store.pool,
        spool=spool,
        retention_days=tenants.spend_retention_days,
        flush_seconds=tenants.spend_flush_seconds,
    )
    spend.start()
    accounting = app[ACCOUNTING]
    accounting.spend = spend
    try:
        yield
    finally:
        accounting.drain()
        accounting.spend = None
        await spend.close(timeout=CLOSE_TIMEOUT)
        if spool is not None:
            await spool.close()


def spend_spool(settings: Settings) -> SpendSpool | None:
    """A client of its own: the state backend's is made after this log and closed before it
    (the spool is needed most at the very end, for the rows a stop leaves)."""
    if settings.redis_url is None:
        return None
    redis = msgspec.structs.replace(settings.redis, max_connections=2)  # a writer, a drainer
    name = f"modelrouter:{redis.key_prefix}:spend:{os.getpid()}"
    return SpendSpool(connect(settings.redis_url, redis, name=name), prefix=redis.key_prefix)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/spend", admin_spend)


# -- parameters ----------------------------------------------------------------------------------
def _when(query: Any, name: str, default: datetime) -> datetime:
    text = query.get(name)
    if text is None:
        return default
    try:
        found = (
            datetime.combine(date.fromisoformat(text), time())
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise bad_request(
            f"`{name}` must be an ISO 8601 date or time (2026-12-01, 2026-12-01T08:00:00Z)",
            param=name,
        ) from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def _range(query: Any) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start, end = _when(query, "from", month), _when(query, "to", now)
    if start >= end:
        raise bad_request("`from` must be before `to`", param="from")
    return start, end


def _group_by(query: Any, default: str) -> GroupBy:
    value = query.get("group_by", default)
    if value not in GROUP_BYS:
        raise bad_request(f"`group_by` must be one of {', '.join(GROUP_BYS)}", param="group_by")
    return value  # type: ignore[no-any-return]


def _unknown(query: Any, known: tuple[str, ...]) -> None:
    for name in query:
        if name not in known:
            raise bad_request(f"unknown parameter `{name}`", param=name)


def _unavailable() -> ApiError:
    return ApiError(
        503, "spend_unavailable", "the spend database is not answering", retry_after=1.0
    )


def _json(data: Any) -> web.Response:
    return web.Response(body=json_encoder.encode(data), content_type="application/json")


def _spend_log(request: web.Request, *, admin: bool) -> SpendLog:
    """The spend log; without DATABASE_URL, /admin's 503 `keys_unavailable` (as the other
    /admin routes) or, for a client, a 404 as /v1/history's."""
    spend = request.app.get(SPEND)
    if spend is None:
        message = "spend lives in PostgreSQL and DATABASE_URL is not set"
        if admin:
            raise ApiError(503, "keys_unavailable", message, retryable=False)
        raise ApiError(404, "spend_off", message)
    return spend


# -- the budget columns ----------------------------------------------------------------------------
async def _budget_columns(
    runtime: Runtime,
    key_id: str,
    *,
    name: str | None,
    team: str | None,
    budget: Any,
    period: Any,
) -> dict[str, Any]:
    columns: dict[str, Any] = {"name": name, "team": team, "budget_period": period}
    if budget is None:
        return columns
    columns["budget_usd"] = float(budget)
    gate = runtime.budgets
    if gate is not None:
        window, spent = await gate.period_spend(key_id, period)
        columns |= {"period_spend_usd": usd(spent), "reset_at": window.reset_at}
    return columns


def _budget_of(key: Key) -> Decimal | None:
    return None if key.budget_nanos is None else Decimal(key.budget_nanos).scaleb(-9)


# -- the routes ----------------------------------------------------------------------------------
async def admin_spend(request: web.Request) -> web.Response:
    admin_store(request)  # the admin key, and the database configured
    spend = _spend_log(request, admin=True)
    query = request.query
    _unknown(query, ("group_by", "from", "to"))
    group_by = _group_by(query, "key")
    start, end = _range(query)
    runtime = request.app[RUNTIME]
    try:
        groups, uncounted = await spend.report(group_by, start, end)
        keys = await spend.keys([g.group for g in groups if g.group]) if group_by == "key" else {}
        data: list[Any] = []
        for g in groups:
            if group_by != "key":
                data.append(SpendEntry(g.group, usd(g.nanos), g.requests))
                continue
            extra: dict[str, Any] = {}
            row = keys.get(g.group) if g.group else None
            if row is not None:
                extra = await _budget_columns(
                    runtime,
                    row["id"],
                    name=row["name"],
                    team=row["team"],
                    budget=row["budget_usd"],
                    period=row["budget_period"],
                )
            data.append(KeySpendEntry(g.group, usd(g.nanos), g.requests, **extra))
    except DB_ERRORS:
        raise _unavailable() from None
    report = KeySpendReport if group_by == "key" else SpendReport
    return _json(report(data, start, end, uncounted))


async def client_spend(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    identity = await authenticate(request, runtime)
    spend = _spend_log(request, admin=False)
    query = request.query
    _unknown(query, ("from", "to"))
    start, end = _range(query)
    key = identity.key
    try:
        groups, uncounted = await spend.report("key", start, end, key_id=identity.client_id)
        extra: dict[str, Any] = {}
        if key is not None:
            extra = await _budget_columns(
                runtime,
                key.id,
                name=key.name,
                team=key.team,
                budget=_budget_of(key),
                period=key.budget_period,
            )
    except DB_ERRORS:
        raise _unavailable() from None
    found = groups[0] if groups else None
    entry = KeySpendEntry(
        identity.client_id,
        usd(found.nanos) if found else 0.0,
        found.requests if found else 0,
        **extra,
    )
    return _json(KeySpendReport([entry], start, end, uncounted))
