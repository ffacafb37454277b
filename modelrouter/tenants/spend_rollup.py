"""Spend rows past SPEND_RETENTION_DAYS become daily totals: one row per UTC day, key, team,
provider and model in `modelrouter_spend_daily` (requests and cost summed), so the table of
one row per request stops growing while budgets and reports stay exact.

Only whole days move: the cutoff is a UTC midnight, and a day's rows are deleted and added to
its total in one transaction, a chunk at a time (a day is counted once: in rows or in its
total). A row written after its day was rolled up (spend that waited in the spool for longer
than the retention) is added to that day's total by the next run. One replica rolls up at a
time (a transaction-scoped advisory lock; the others skip that run).

Reads count a rolled-up day at its start: it is in a range [from, to) when its 00:00 UTC is.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from modelrouter.tenants.schema import SPEND, SPEND_DAILY

LOCK_ID: Final = 0x6D72_726C  # "mrrl": one roll-up at a time across replicas
CHUNK_ROWS: Final = 10_000  # rows moved per transaction
_MOVE: Final = f"""
WITH moved AS (
    DELETE FROM {SPEND} WHERE id IN (
        SELECT id FROM {SPEND} WHERE created_at < $1 ORDER BY created_at LIMIT $2
    )
    RETURNING created_at, key_id, team, provider, model, cost_nanos
), added AS (
    INSERT INTO {SPEND_DAILY} AS d (day, key_id, team, provider, model, cost_nanos, requests)
    SELECT (created_at AT TIME ZONE 'UTC')::date, key_id, coalesce(team, ''), provider, model,
           sum(cost_nanos), count(*)
    FROM moved GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (day, key_id, team, provider, model) DO UPDATE
    SET cost_nanos = d.cost_nanos + excluded.cost_nanos, requests = d.requests + excluded.requests
    RETURNING 1
)
SELECT count(*) FROM moved
"""  # noqa: S608 - constants


def cutoff(now: datetime, days: int) -> datetime:
    """The UTC midnight `days` days before today's: rows older than it are rolled up."""
    today = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    return today - timedelta(days=days)


def first_day(at: datetime) -> date:
    """The first UTC day whose start is at or after `at` (a range's bound on daily rows)."""
    at = at.astimezone(UTC)
    day = at.date()
    return day if at.time() == time() else day + timedelta(days=1)


async def roll_up(
    conn: Any, before: datetime, *, chunk: int = CHUNK_ROWS, timeout: float = 30.0
) -> int | None:
    """Move the rows older than `before` into the daily totals, each chunk within `timeout`
    seconds (TimeoutError: that chunk is rolled back); the rows moved, or None when another
    replica is rolling up now."""
    moved = 0
    while True:
        async with asyncio.timeout(timeout), conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_ID):
                return None if moved == 0 else moved
            count = int(await conn.fetchval(_MOVE, before, chunk))
        moved += count
        if count < chunk:
            return moved
