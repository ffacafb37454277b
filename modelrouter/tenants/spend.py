"""Spend in PostgreSQL: one row per answered request (`modelrouter_spend`, the key store's
migrations), written in batches off the request path, and the reports read from it.

`add` only appends to a bounded queue. A task owned here writes a batch every `flush_seconds`
(or as soon as `batch_rows` wait). Each row's id is made here: a batch sent again after a reply
was lost is written once (`ON CONFLICT DO NOTHING`). `close` writes what is left within a
bounded time.

A database that does not answer delays spend, it does not lose it:
- with a Redis spool (REDIS_URL, `spend_spool.SpendSpool`), the rows of a failed write go to
  Redis at once, and so does every row added while the database stays away or a write hangs
  (each `flush_seconds`), and what is left at `close`; any replica drains the spool into the
  database once it answers (at start, every `drain_seconds`, and when its own writes
  recover), one replica at a time. A kill loses what came in since the last write or spill:
  about `flush_seconds`.
- without one, the rows wait in memory for the next try; a stop while the database is away
  loses them (`spend_unwritten`).

Rows older than `retention_days` (SPEND_RETENTION_DAYS) become daily totals
(`spend_rollup`). The reads count the rows, the daily totals and what waits in the spool (up to
SPOOL_READ_ROWS of it; a row both written and still spooled is counted once, by its id).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import structlog

from modelrouter.tenants.schema import KEYS, SPEND, SPEND_DAILY, migrate
from modelrouter.tenants.spend_rollup import cutoff, first_day, roll_up
from modelrouter.tenants.spend_spool import REDIS_ERRORS, SpendSpool
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
SPOOL_READ_ROWS: Final = 100_000  # the most a read takes from the spool (a report says the rest)
# What a key spent since $2 (null: ever): its rows (less those also in the spool: $3), its
# daily totals from the first day starting at or after $2 ($4).
_SPENT: Final = (
    f"SELECT (SELECT coalesce(sum(cost_nanos), 0) FROM {SPEND}"  # noqa: S608 - constants
    " WHERE key_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)"
    " AND id <> ALL($3::uuid[]))"
    f" + (SELECT coalesce(sum(cost_nanos), 0) FROM {SPEND_DAILY}"
    " WHERE key_id = $1 AND ($4::date IS NULL OR day >= $4))"
)
# Spend and requests in [$1, $2) (one key's with $3): the rows not also in the spool, daily
# totals of the days starting in the range ($4, $5), and the spool's rows in it ($6-$13, as
# `_columns` gives them; $6 their ids).
_REPORT: Final = (
    "WITH s AS ("  # noqa: S608 - constants, and a column from GROUPS
    " SELECT key_id, team, provider, model, created_at, cost_nanos, 1::bigint AS requests"
    f" FROM {SPEND} WHERE created_at >= $1 AND created_at < $2"
    " AND ($3::text IS NULL OR key_id = $3) AND id <> ALL($6::uuid[])"
    " UNION ALL"
    " SELECT key_id, nullif(team, ''), provider, model,"
    " day::timestamp AT TIME ZONE 'UTC', cost_nanos, requests"
    f" FROM {SPEND_DAILY} WHERE day >= $4 AND day < $5 AND ($3::text IS NULL OR key_id = $3)"
    " UNION ALL"
    " SELECT k, t, p, m, c, n, 1::bigint FROM unnest($6::uuid[], $7::timestamptz[], $8::text[],"
    " $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[])"
    " AS u(i, c, k, t, p, m, n, r)"
    ") SELECT {column} AS grp, sum(s.cost_nanos) AS nanos, sum(s.requests) AS requests"
    " FROM s GROUP BY grp ORDER BY nanos DESC, grp LIMIT 10000"
)
_INSERT: Final = (
    f"INSERT INTO {SPEND} (id, created_at, key_id, team, provider, model, cost_nanos, request_id)"  # noqa: S608 - constants
    " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::bigint[], $8::text[]) ON CONFLICT (id) DO NOTHING"
)
SPILL_ROWS: Final = 1000  # rows per append to the spool (one script call's arguments)


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


class Spooled(msgspec.Struct, frozen=True):
    """What a read took from the spool: its rows, and how many it left (None: Redis did not
    answer, so none were counted)."""

    rows: list[SpendRow]
    uncounted: int | None = 0


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
        spool: SpendSpool | None = None,
        drain_seconds: float = 5.0,
        retention_days: int = 0,
        rollup_seconds: float = 3600.0,
    ) -> None:
        """`spool`: where rows go while the database is away (None: they wait in memory);
        `drain_seconds`: how often the spool is looked at while the database answers;
        `retention_days`: rows older become daily totals, looked at every `rollup_seconds`
        (0: rows are kept)."""
        self.pool = pool
        self.spool = spool
        self.drain_seconds = drain_seconds
        self.retention_days = retention_days
        self.rollup_seconds = rollup_seconds
        self.rolled = 0  # rows this process moved into daily totals
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.queue_rows = queue_rows
        self.timeout = timeout
        self.min_retry = min_retry
        self.max_retry = max_retry
        self.queue: deque[SpendRow] = deque()
        self.dropped = 0
        self.ok = True  # the last write succeeded
        self.spool_ok = True  # the last spill succeeded
        self.spilled = 0  # rows this process moved to the spool
        self.drained = 0  # rows this process moved from the spool to the database
        self._migrated = False
        self._wake = asyncio.Event()
        self._drain_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._roller: asyncio.Task[None] | None = None

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
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="spend-writer")
        if self.spool is not None:
            self._drainer = loop.create_task(self._drain_loop(), name="spend-drainer")
        if self.retention_days > 0:
            self._roller = loop.create_task(self._rollup_loop(), name="spend-rollup")

    async def close(self, *, timeout: float = 5.0) -> None:
        """Write what is queued: to the database while it answers, within `timeout` (half of
        it with a spool), then the rest to the spool."""
        tasks = [t for t in (self._task, self._drainer, self._roller) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        database_end = end if self.spool is None else loop.time() + timeout / 2
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(database_end):
                while self.queue and await self._step():
                    pass
        if self.queue and self.spool is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(end):
                    await self._spill()
        if self.queue:
            log.error("spend_unwritten", rows=len(self.queue))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        retry = self.min_retry
        due = 0.0  # after a failed write, the database is tried again then
        while True:
            tried = self.ok or loop.time() >= due
            if tried:
                if await self._try():
                    retry = self.min_retry
                else:
                    due = loop.time() + retry
                    retry = min(retry * 2, self.max_retry)
            # A spool that failed is tried again with the database.
            spilling = self.spool is not None and (self.spool_ok or tried)
            if not self.ok and spilling and self.queue:
                # At once, not at the next try: what a kill loses stays about a tick's rows.
                spilling = await self._spill()
            if self.ok and len(self.queue) >= self.batch_rows:
                continue
            if self.ok:
                pause = self.flush_seconds
            elif spilling:  # a full batch, or the next tick, goes to the spool
                pause = min(self.flush_seconds, due - loop.time())
            else:  # nowhere to write: nothing to do before the next try
                await asyncio.sleep(max(0.0, due - loop.time()))
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, pause))

    async def _try(self) -> bool:
        """`_step`; with a spool, what waits goes there each `flush_seconds` the step takes
        (a database that does not answer at all holds it up to `timeout`). A batch both
        written and spilled is drained later as a no-op (its ids)."""
        if self.spool is None:
            return await self._step()
        step = asyncio.ensure_future(self._step())
        try:
            while True:
                done, _ = await asyncio.wait({step}, timeout=self.flush_seconds)
                if done:
                    return step.result()
                if self.queue:
                    await self._spill()
        finally:
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)

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
                where = "Redis" if self.spool is not None else "memory"
                log.warning(
                    "spend_unavailable",
                    error=type(exc).__name__,
                    queued=len(self.queue),
                    message=f"spend waits in {where} until PostgreSQL answers",
                )
            self.ok = self._migrated = False
            return False
        self._forget(batch)  # the rows written: only now do they leave the queue
        if not self.ok:
            log.info("spend_recovered", queued=len(self.queue))
            self.ok = True
            self._drain_now.set()
        return True

    def _forget(self, batch: list[SpendRow]) -> None:
        """Take `batch` off the head of the queue (unless `add` dropped some of it meanwhile)."""
        queue = self.queue
        for row in batch:
            if queue and queue[0] is row:
                queue.popleft()

    # -- the Redis spool -------------------------------------------------------------------------
    async def _spill(self) -> bool:
        """Move every queued row to the spool; False when Redis failed or the spool is full
        (the rows not moved stay queued)."""
        assert self.spool is not None
        while self.queue:
            batch = [self.queue[i] for i in range(min(len(self.queue), SPILL_ROWS))]
            try:
                stored = await self.spool.spill([_encode(r) for r in batch])
            except REDIS_ERRORS as exc:
                return self._spill_failed(f"redis: {type(exc).__name__}")
            if not stored:
                return self._spill_failed(f"the spool holds {self.spool.max_rows} rows")
            self._forget(batch)
            self.spilled += len(batch)
        if not self.spool_ok:
            log.info("spend_spool_recovered")
            self.spool_ok = True
        return True

    def _spill_failed(self, reason: str) -> bool:
        if self.spool_ok:
            log.warning(
                "spend_spool_unavailable",
                reason=reason,
                queued=len(self.queue),
                message="spend waits in memory until PostgreSQL or Redis answers",
            )
            self.spool_ok = False
        return False

    async def _drain_loop(self) -> None:
        failed = False
        while True:
            if self.ok:  # the writer's view of the database; a drain finds out itself too
                try:
                    await self.drain()
                    failed = False
                except (*DB_ERRORS, *REDIS_ERRORS) as exc:
                    if not failed:
                        log.warning("spend_drain_failed", error=type(exc).__name__)
                    failed = True
            self._drain_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_now.wait(), self.drain_seconds)

    async def drain(self) -> int:
        """Write the spool to the database, a batch at a time, unless another replica holds
        the drainer's lock; the rows written. A failure raises, and leaves its batch in Redis.
        """
        spool = self.spool
        if spool is None or not await spool.length():
            return 0
        token = await spool.lock()
        if token is None:
            return 0
        written = 0
        try:
            while raw := await spool.head(self.batch_rows):
                rows = _decode(raw)
                if rows:
                    await self._write(rows)
                if not await spool.remove_head(token, len(raw)):
                    break  # the lease ran out: the next drainer writes them again (once)
                written += len(rows)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await spool.unlock(token)
            if written:
                self.drained += written
                log.info("spend_drained", rows=written)
        return written

    # -- retention ---------------------------------------------------------------------------
    async def _rollup_loop(self) -> None:
        while True:
            try:
                await self.roll_up()
            except DB_ERRORS as exc:
                log.warning("spend_rollup_failed", error=type(exc).__name__)
            await asyncio.sleep(self.rollup_seconds)

    async def roll_up(self, now: datetime | None = None) -> int:
        """Move the rows past the retention into daily totals (unless another replica is at
        it); the rows moved. A chunk's transaction is bounded by the writer's timeout."""
        before = cutoff(now or datetime.now(UTC), self.retention_days)
        async with self.pool.acquire() as conn:
            async with asyncio.timeout(self.timeout):
                await self._migrate(conn)
            moved = await roll_up(conn, before, timeout=self.timeout * 6)
        if moved:
            self.rolled += moved
            log.info("spend_rolled_up", rows=moved, before=before.date().isoformat())
        return moved or 0

    async def _write(self, rows: list[SpendRow]) -> None:
        try:
            async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
                await self._migrate(conn)
                await conn.execute(_INSERT, *_columns(rows))
        except DB_ERRORS:
            self._migrated = False
            raise

    async def _migrate(self, conn: Any) -> None:
        if not self._migrated:
            await migrate(conn)
            self._migrated = True

    # -- reads ---------------------------------------------------------------------------------
    async def spent(self, key_id: str, since: datetime | None) -> int:
        """What `key_id` spent since `since` (None: ever): written (rows and daily totals),
        waiting in the Redis spool, or still queued here."""
        spooled = [
            r
            for r in (await self.spooled()).rows
            if r.key_id == key_id and (since is None or r.created_at >= since)
        ]
        async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
            await self._migrate(conn)
            found = await conn.fetchval(
                _SPENT,
                key_id,
                since,
                [r.id for r in spooled],
                None if since is None else first_day(since),
            )
        return int(found) + sum(r.cost_nanos for r in spooled) + self.queued(key_id, since)

    async def report(
        self, group_by: GroupBy, start: datetime, end: datetime, *, key_id: str | None = None
    ) -> tuple[list[Group], int | None]:
        """Spend and requests in [start, end), by `group_by` (one key's only, with `key_id`),
        and the spool's rows it could not count (`Spooled.uncounted`)."""
        spooled = await self.spooled()
        rows = [
            r
            for r in spooled.rows
            if start <= r.created_at < end and (key_id is None or r.key_id == key_id)
        ]
        async with asyncio.timeout(self.timeout), self.pool.acquire() as conn:
            await self._migrate(conn)
            found = await conn.fetch(
                _REPORT.format(column=GROUPS[group_by]),
                start,
                end,
                key_id,
                first_day(start),
                first_day(end),
                *_columns(rows),
            )
        groups = [Group(row["grp"], int(row["nanos"]), int(row["requests"])) for row in found]
        return groups, spooled.uncounted

    async def spooled(self) -> Spooled:
        """The rows waiting in the spool (the first SPOOL_READ_ROWS of them)."""
        spool = self.spool
        if spool is None:
            return Spooled([])
        try:
            waiting = await spool.length()
            raw = await spool.head(SPOOL_READ_ROWS) if waiting else []
        except REDIS_ERRORS as exc:
            log.warning("spend_spool_unread", error=type(exc).__name__)
            return Spooled([], None)
        return Spooled(_decode(raw), max(0, waiting - len(raw)))

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


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(SpendRow)


def _decode(raw: list[str]) -> list[SpendRow]:
    """The spool's rows; one that does not decode is logged and left out (not retried)."""
    rows = []
    for item in raw:
        try:
            rows.append(_decoder.decode(item))
        except msgspec.DecodeError as exc:
            log.error("spend_spool_bad_row", error=str(exc), row=item[:200])  # noqa: TRY400 - no trace to show
    return rows


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
