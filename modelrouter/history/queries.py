"""Reading the history for `GET /v1/history`: one client's records, newest first, in pages.

The cursor is opaque to clients: the (time, id) of the last record of a page, encoded, so the
next page starts strictly after it whatever was written meanwhile (keyset pagination).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from modelrouter.history.records import BIGINT_MAX, HistoryRecord, shown
from modelrouter.history.schema import TABLE

MAX_LIMIT: Final = 200
MAX_TEXT: Final = 256  # a text filter (provider, model) or request id longer than this: a 400
Cursor = tuple[datetime, int]  # the (created_at, id) of the last record of a page


class BadCursor(ValueError):
    pass


class BadQuery(ValueError):
    """A value the database could not compare (one the route's checks let through)."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be compared with a text column, or None: PostgreSQL's text holds
    no NUL (the query would fail, not match nothing)."""
    if "\x00" in value:
        return "holds a NUL character"
    if len(value) > MAX_TEXT:
        return f"is longer than {MAX_TEXT} characters"
    return None


def in_range(when: datetime) -> bool:
    """Whether an aware time is one the database driver can send (it sends UTC)."""
    try:
        when.astimezone(UTC)
    except OverflowError:
        return False
    return True


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    since: datetime | None = None
    until: datetime | None = None
    provider: str | None = None
    model: str | None = None
    status: int | None = None


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """The cursor's (time, id), checked as this server writes them: a cursor is opaque, and
    one that fails a check was not given by this server."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, row_id = raw.partition("|")
        decoded = datetime.fromisoformat(when), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = None
    if (
        decoded is None
        or decoded[0].tzinfo is None
        or not in_range(decoded[0])
        or not 1 <= decoded[1] <= BIGINT_MAX  # a bigserial
    ):
        raise BadCursor("cursor is not one this server gave")
    return decoded


async def page(
    conn: Any, client: str, filters: Filters, *, limit: int, cursor: Cursor | None
) -> tuple[list[HistoryRecord], str | None]:
    """One page of `client`'s records and the cursor of the next (None: this is the last)."""
    where = ["client_id = $1"]
    args: list[Any] = [client]

    def match(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if filters.since is not None:
        match("created_at >= ?", filters.since)
    if filters.until is not None:
        match("created_at < ?", filters.until)
    if filters.provider is not None:
        match("provider = ?", filters.provider)
    if filters.model is not None:
        match("model = ?", filters.model)
    if filters.status is not None:
        match("status = ?", filters.status)
    if cursor is not None:
        args += cursor
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = (
        f"SELECT * FROM {TABLE} WHERE {' AND '.join(where)}"  # noqa: S608 - placeholders only
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
    )
    rows = await conn.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    following = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return [shown(row) for row in rows], following


async def one(conn: Any, client: str, request_id: str) -> HistoryRecord | None:
    """`client`'s latest record of `request_id` (a client may reuse its X-Request-ID)."""
    row = await conn.fetchrow(
        f"SELECT * FROM {TABLE} WHERE client_id = $1 AND request_id = $2"  # noqa: S608
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        client,
        request_id,
    )
    return None if row is None else shown(row)
