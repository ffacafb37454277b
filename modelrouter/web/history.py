"""`GET /v1/history` and `GET /v1/history/{request_id}`: a client's own requests, and the
history's lifetime in the app (`history_ctx`, `HISTORY`).

Each client key sees the records of its own requests only (by the key's id, a hash). With no
API_KEY set there is one client, `anonymous` (the gateway then serves on loopback only): it
sees the records of requests made without a key, none written under a client key. Without
DATABASE_URL both answer 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from aiohttp import web

from modelrouter.errors import ApiError, bad_request
from modelrouter.history import (
    DB_ERRORS,
    MAX_LIMIT,
    BadCursor,
    BadQuery,
    Filters,
    History,
    HistoryRecord,
    decode_cursor,
    in_range,
    text_problem,
)
from modelrouter.schemas import json_encoder
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.auth import authenticate
from modelrouter.web.runtime import METRICS, RUNTIME, SETTINGS

HISTORY = web.AppKey("history", History)


class HistoryPage(msgspec.Struct, frozen=True):
    """`GET /v1/history`: a page of records, newest first; `next_cursor` (null on the last
    page) is the `cursor` parameter of the next."""

    object: Literal["list"]
    data: list[HistoryRecord]
    next_cursor: str | None


DEFAULT_LIMIT = 50
CLOSE_TIMEOUT = 5.0  # shutdown waits this long at most to write the rows still queued


async def history_ctx(app: web.Application) -> AsyncIterator[None]:
    """With DATABASE_URL: the history for the app's lifetime (start-up does not wait for the
    database), fed by the accounting; at cleanup, what is queued is written."""
    settings = app[SETTINGS]
    if settings.database_url is None:
        yield
        return
    history = app[HISTORY] = History(settings.database_url, settings.history, app[METRICS])
    await history.start()
    accounting = app[ACCOUNTING]
    accounting.history = history
    try:
        yield
    finally:
        accounting.drain()  # the requests that ended last
        accounting.history = None
        await history.close(timeout=CLOSE_TIMEOUT)


async def _history(request: web.Request) -> tuple[History, str]:
    """The history and the caller's client id (after checking its key)."""
    runtime = request.app[RUNTIME]
    client = (await authenticate(request, runtime)).client_id
    history = request.app.get(HISTORY)
    if history is None:
        raise ApiError(404, "history_off", "history is off (DATABASE_URL is not set)")
    return history, client


def _unavailable() -> ApiError:
    return ApiError(
        503, "history_unavailable", "the history database is not answering", retry_after=1.0
    )


# Every parameter is checked before the database is asked: one it cannot compare (a NUL, a
# time or id out of its range) is the client's 400, never a "database not answering" 503.
def _time(query: Any, name: str) -> datetime | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        if value.isascii() and value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        message = f"`{name}` is not an ISO 8601 time or epoch seconds"
        raise bad_request(message, param=name) from None
    if when.tzinfo is None:
        raise bad_request(f"`{name}` needs a time zone (e.g. Z)", param=name)
    if not in_range(when):
        raise bad_request(f"`{name}` is out of range (years 1 to 9999, in UTC)", param=name)
    return when


def _int(query: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None:
        return default
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise bad_request(f"`{name}` must be an integer from {low} to {high}", param=name)
    return int(value)


def _text(value: str | None, name: str) -> str | None:
    problem = None if value is None else text_problem(value)
    if problem is not None:
        raise bad_request(f"`{name}` {problem}", param=name)
    return value


def _cursor(value: str | None) -> tuple[datetime, int] | None:
    try:
        return None if value is None else decode_cursor(value)
    except BadCursor as exc:
        raise bad_request(str(exc), param="cursor") from None


async def list_history(request: web.Request) -> web.Response:
    history, client = await _history(request)
    query = request.query
    filters = Filters(
        since=_time(query, "since"),
        until=_time(query, "until"),
        provider=_text(query.get("provider"), "provider"),
        model=_text(query.get("model"), "model"),
        status=_int(query, "status", None, 100, 599),
    )
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    cursor = _cursor(query.get("cursor"))
    try:
        records, following = await history.page(client, filters, limit=limit, cursor=cursor)
    except BadQuery as exc:
        raise bad_request(str(exc)) from None
    except DB_ERRORS:
        raise _unavailable() from None
    body = json_encoder.encode(HistoryPage("list", records, following))
    return web.Response(body=body, content_type="application/json")


async def get_history(request: web.Request) -> web.Response:
    history, client = await _history(request)
    request_id = _text(request.match_info["request_id"], "request_id")
    assert request_id is not None
    try:
        found = await history.one(client, request_id)
    except BadQuery as exc:
        raise bad_request(str(exc), param="request_id") from None
    except DB_ERRORS:
        raise _unavailable() from None
    if found is None:  # another client's request looks exactly like an unknown one
        raise ApiError(404, "request_not_found", f"no request {request_id!r} in your history")
    return web.Response(body=json_encoder.encode(found), content_type="application/json")
