"""Spend in PostgreSQL: one row per answered request (`modelrouter_spend`, the key store's
migrations), written in batches off the request path, and the reports read from it.

`add` only appends to a bounded queue. A task owned here writes a batch every `flush_seconds`
(or as soon as `batch_rows` wait); a database that does not answer keeps the rows for the next
try, so an outage delays spend, it does not lose it. Each row's id is made here: a batch sent
again after a reply was lost is written once (`ON CONFLICT DO NOTHING`). `close` writes what
is left within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import structlog

from modelrouter.tenants.schema import KEYS, SPEND, migrate
from modelrouter.tenants.store import DB_ERRORS

log = structlog.get_logger("modelrouter.spend")
GroupBy = Literal["key", "team", "provider", "model", "day"]
GROUPS: Final[dict[str, str]] = {
    "key": "s.key_id",
    "team": "s.team",
    "provider": "s.provider",
    "model": "s.provider || '/' || s.model",
    "day": "to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_INSERT: Final = (
    f"INSERT INTO {SPEND} (id, created_at, key_id, team, provider, model, cost_nanos, request_id)"  # noqa: S608 - constants
    " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::bigint[], $8::text[]) ON CONFLICT (id) DO NOTHING"
)


class SpendRow(msgspec.Struct, frozen=True, gc=False):
    created_at: datetime
    key_id: str
    team: str | None
    provider: str
    model: str
    cost_nanos: int
    request_id: str
    id: uuid.UUID = msgspec.field(default_factory=uuid.uuid4)


class Group(msgspec.Struct, frozen=True):
    group: str | None
    nanos: int
    requests: int


class SpendLog:
    def __init__(
        self,
        pool: Any,
        *,
        flush_seconds: float = 1.0,
        batch_rows: int = 1000,
        queue_rows: int = 1_000_000,
        timeout: float = 5.0,
        min_retry: float = 0.2,
        max_retry: float = 10.0,
    ) -> None:
        self.pool = pool
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.queue_rows = queue_rows
        self.timeout = timeout
        self.min_retry = min_retry
        self.max_retry = max_retry
        self.queue: deque[SpendRow] = deque()
        self.dropped = 0
        self.ok = True  # the last write succeeded
        self._migrated = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the request side (from the accounting's drain, off the request path) -----------------
    def add(self, row: SpendRow) -> None:
        if len(self.queue) >= self.queue_rows:
            self.queue.popleft()
            self.dropped += 1
            log.error("spend_dropped", queue_rows=self.queue_rows)
        self.queue.append(row)
        if len(self.queue) >= self.batch_rows:
            self._wake.set()

    def queued(self, key_id: str, since: datetime | None) -> int:
        """Spend of `key_id` since `since` still waiting here to be written."""
        return sum(
            r.cost_nanos
            for r in self.queue
            if r.key_id == key_id and (since is None or r.created_at >= since)
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spend-writer")

    async def close(self, *, timeout: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.queue and await self._step():
                    pass
        if self.queue:
            log.error("spend_unwritten", rows=len(self.queue))

    async def _run(self) -> None:
        retry = self.min_retry
        while True:
            ok = await self._step()
            retry = self.min_retry if ok else min(retry * 2, self.max_retry)
            if len(self.queue) < self.batch_rows or not ok:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_seconds if ok else retry)

    async def _step(self) -> bool:
        """Write one batch; False when the database failed (the rows stay queued)."""
        batch = [self.queue[i] for i in range(min(len(self.queue), self.batch_rows))]
        try:
            async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
                await self._migrate(conn)
                if batch:
                    await conn.execute(_INSERT, *_columns(batch))
        except DB_ERRORS as exc:
            if self.ok:
                log.warning(
                    "spend_unavailable",
                    error=type(exc).__name__,
                    queued=len(self.queue),
                    message="spend waits in memory until PostgreSQL answers",
                )
            self.ok = self._migrated = False
            return False
        for _ in batch:  # the rows written: only now do they leave the queue
            self.queue.popleft()
        if not self.ok:
            log.info("spend_recovered", queued=len(self.queue))
            self.ok = True
        return True

    async def _migrate(self, conn: Any) -> None:
        if not self._migrated:
            await migrate(conn)
            self._migrated = True

    # -- reads ---------------------------------------------------------------------------------
    async def spent(self, key_id: str, since: datetime | None) -> int:
        """What `key_id` spent since `since` (None: ever), written or still queued here."""
        async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
            await self._migrate(conn)
            found = await conn.fetchval(
                f"SELECT coalesce(sum(cost_nanos), 0) FROM {SPEND}"  # noqa: S608 - constants
                " WHERE key_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)",
                key_id,
                since,
            )
        return int(found) + self.queued(key_id, since)

    async def report(
        self, group_by: GroupBy, start: datetime, end: datetime, *, key_id: str | None = None
    ) -> list[Group]:
        """Spend and requests in [start, end), by `group_by` (one key's only, with `key_id`)."""
        column = GROUPS[group_by]
        async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
            await self._migrate(conn)
            rows = await conn.fetch(
                f"SELECT {column} AS grp, sum(s.cost_nanos) AS nanos, count(*) AS requests"  # noqa: S608 - a column from GROUPS
                f" FROM {SPEND} s WHERE s.created_at >= $1 AND s.created_at < $2"
                " AND ($3::text IS NULL OR s.key_id = $3)"
                " GROUP BY grp ORDER BY nanos DESC, grp LIMIT 10000",
                start,
                end,
                key_id,
            )
        return [Group(row["grp"], int(row["nanos"]), int(row["requests"])) for row in rows]

    async def keys(self, ids: list[str]) -> dict[str, Any]:
        """The key rows of `ids` that are virtual keys (name, team, budget, period)."""
        async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
            await self._migrate(conn)
            rows = await conn.fetch(
                f"SELECT id, name, team, budget_usd, budget_period FROM {KEYS}"  # noqa: S608
                " WHERE id = any($1::text[])",
                ids,
            )
        return {row["id"]: row for row in rows}


def _columns(batch: list[SpendRow]) -> tuple[list[Any], ...]:
    return (
        [r.id for r in batch],
        [r.created_at for r in batch],
        [r.key_id for r in batch],
        [r.team for r in batch],
        [r.provider for r in batch],
        [r.model for r in batch],
        [r.cost_nanos for r in batch],
        [r.request_id for r in batch],
    )
