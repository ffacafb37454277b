"""Spend rows past SPEND_RETENTION_DAYS become daily totals (issue 19: the spend table had no
retention), against a real PostgreSQL database of the test's own: the rows left are the recent
ones, and every budget and report figure is what it was before the roll-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from modelrouter.config.load import load_settings
from modelrouter.config.structs import ConfigError
from modelrouter.tenants.spend import SpendLog, SpendRow
from modelrouter.tenants.spend_rollup import cutoff, first_day
from tests.conftest import free_port, wait_until
from tests.history.conftest import rows
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
MIDNIGHT = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(database, min_size=0, max_size=4)
    yield pool
    await pool.close()


def row(days_ago: float, nanos: int, *, key: str = "key_a", team: str | None = None) -> SpendRow:
    at = NOW - timedelta(days=days_ago)
    return SpendRow(at, key, team, "groq", "mock-a" if nanos % 2 else "mock-b", nanos, "req")


# Two keys, a team and none, two models, over 45 days: 10 of them past 30 days' retention.
ROWS = [
    row(days, 1_000 + i, key=("key_a", "key_b")[i % 2], team=(None, "red")[i % 3 == 0])
    for i, days in enumerate([0, 0.2, 1, 3, 7, 12, 29, 29.6, 30, 31, 31, 33, 35, 40, 40, 41, 44])
] + [row(40.1, 2_000), row(40.2, 2_002)]  # one day, key, team and model: one daily row


async def written(pool: Any, added: list[SpendRow], **extra: Any) -> SpendLog:
    log = SpendLog(pool, retention_days=30, **extra)
    for r in added:
        log.add(r)
    assert await log._step()
    return log


async def figures(log: SpendLog) -> dict[str, Any]:
    """Everything a budget or a report reads, over ranges of whole days."""
    start, end = MIDNIGHT - timedelta(days=60), MIDNIGHT + timedelta(days=1)
    found: dict[str, Any] = {}
    for group_by in ("key", "team", "provider", "model", "day"):
        groups, uncounted = await log.report(group_by, start, end)
        assert uncounted == 0
        found[group_by] = sorted((g.group or "", g.nanos, g.requests) for g in groups)
    for key in ("key_a", "key_b"):
        found[key] = [
            await log.spent(key, since)
            for since in (None, MIDNIGHT - timedelta(days=35), MIDNIGHT - timedelta(days=3))
        ]
        one, _ = await log.report("key", start, end, key_id=key)
        found[f"{key} alone"] = [(g.group, g.nanos, g.requests) for g in one]
    return found


def test_the_cutoff_is_a_utc_midnight_and_a_range_counts_the_days_starting_in_it() -> None:
    assert cutoff(NOW, 30) == MIDNIGHT - timedelta(days=30)
    assert cutoff(NOW, 0) == MIDNIGHT, "0 days: today's rows stay"
    assert first_day(MIDNIGHT) == MIDNIGHT.date()
    assert first_day(MIDNIGHT + timedelta(seconds=1)) == MIDNIGHT.date() + timedelta(days=1)


async def test_old_rows_become_daily_totals_and_every_figure_stays_the_same(
    pool: Any, database: str
) -> None:
    log = await written(pool, ROWS)
    before = await figures(log)
    assert before["key_a"][0] + before["key_b"][0] == sum(r.cost_nanos for r in ROWS)

    moved = await log.roll_up(NOW)
    old = [r for r in ROWS if r.created_at < MIDNIGHT - timedelta(days=30)]
    assert moved == len(old) == 10
    left = await rows(database, "SELECT created_at FROM modelrouter_spend")
    assert len(left) == len(ROWS) - len(old)
    assert min(r["created_at"] for r in left) >= MIDNIGHT - timedelta(days=30)
    daily = await rows(database, "SELECT * FROM modelrouter_spend_daily")
    assert sum(d["requests"] for d in daily) == len(old)
    assert sum(d["cost_nanos"] for d in daily) == sum(r.cost_nanos for r in old)
    assert len(daily) < len(old), "rows of one day, key, team and model are summed"
    assert await figures(log) == before

    assert await log.roll_up(NOW) == 0, "a second run finds nothing to move"
    assert await figures(log) == before


async def test_a_row_written_after_its_day_was_rolled_up_is_added_to_that_day(
    pool: Any, database: str
) -> None:
    log = await written(pool, [row(40, 1_000), row(40, 3_000)])
    assert await log.roll_up(NOW) == 2
    late = row(40, 5_000)  # waited in the spool meanwhile
    log.add(late)
    assert await log._step()
    assert await log.roll_up(NOW) == 1
    daily = await rows(database, "SELECT cost_nanos, requests FROM modelrouter_spend_daily")
    assert [(d["cost_nanos"], d["requests"]) for d in daily] == [(9_000, 3)]
    assert await log.spent("key_a", None) == 9_000


async def test_two_replicas_rolling_up_at_once_move_each_row_once(pool: Any, database: str) -> None:
    many = [row(31 + i % 5, 1_000 + i, key=f"key_{i % 7}") for i in range(3_000)]
    log = await written(pool, many, batch_rows=5_000)
    other = SpendLog(pool, retention_days=30)
    moved = await asyncio.gather(log.roll_up(NOW), other.roll_up(NOW))
    moved_again = await log.roll_up(NOW)  # whatever the lock made one of them skip
    assert sum(moved) + moved_again == 3_000
    daily = await rows(
        database, "SELECT sum(cost_nanos) AS n, sum(requests) AS r FROM modelrouter_spend_daily"
    )
    assert (daily[0]["n"], daily[0]["r"]) == (sum(r.cost_nanos for r in many), 3_000)
    assert await rows(database, "SELECT id FROM modelrouter_spend") == []


async def test_retention_zero_keeps_every_row(pool: Any, database: str) -> None:
    log = SpendLog(pool, retention_days=0)
    for r in ROWS:
        log.add(r)
    log.start()
    try:

        async def all_written() -> bool:
            try:
                return len(await rows(database, "SELECT id FROM modelrouter_spend")) == len(ROWS)
            except asyncpg.UndefinedTableError:
                return False

        await wait_until(all_written, timeout=10)
    finally:
        await log.close()
    assert log._roller is None
    assert len(await rows(database, "SELECT id FROM modelrouter_spend")) == len(ROWS)


async def test_a_started_log_rolls_up_at_once(pool: Any, database: str) -> None:
    # The started log rolls up by the real clock: rows of 400 days ago and of now.
    now = datetime.now(UTC)
    old, new = (
        SpendRow(now - timedelta(days=d), "key_a", None, "groq", "m", n, "r")
        for d, n in ((400, 7), (0, 9))
    )
    log = await written(pool, [old, new])
    log.start()
    try:

        async def rolled() -> bool:
            return log.rolled > 0

        await wait_until(rolled, timeout=10)
    finally:
        await log.close()
    assert log.rolled == 1
    assert await log.spent("key_a", None) == 16


def test_spend_retention_days_is_read_and_checked() -> None:
    assert load_settings({}).tenants.spend_retention_days == 30
    assert load_settings({"SPEND_RETENTION_DAYS": "0"}).tenants.spend_retention_days == 0
    with pytest.raises(ConfigError, match="SPEND_RETENTION_DAYS"):
        load_settings({"SPEND_RETENTION_DAYS": "-1"})
    assert load_settings({"SPEND_FLUSH_SECONDS": "0.5"}).tenants.spend_flush_seconds == 0.5
    with pytest.raises(ConfigError, match="SPEND_FLUSH_SECONDS"):
        load_settings({"SPEND_FLUSH_SECONDS": "0"})


async def test_a_roll_up_that_fails_is_logged_and_tried_again() -> None:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none", min_size=0, max_size=1
    )
    log = SpendLog(pool, retention_days=30, rollup_seconds=0.01)
    with capture_logs() as logs:
        log.start()
        try:

            async def failed_twice() -> bool:
                return sum(e["event"] == "spend_rollup_failed" for e in logs) >= 2

            await wait_until(failed_twice, timeout=10)
        finally:
            await log.close(timeout=0.1)
            await pool.close()
    assert log.rolled == 0
