"""Writing the history off the request path: a bounded queue, flushed by COPY in batches.

`add` only appends (the oldest row is dropped, and counted, when the queue is full). A task
owned here connects and migrates (retrying in the background: start-up never waits for the
database), then writes a batch every HISTORY_FLUSH_SECONDS, or as soon as HISTORY_BATCH_ROWS
wait (or the queue is full, when it is the smaller), and purges rows older than
HISTORY_RETENTION_DAYS now and then. What the database cannot hold is cleaned first
(`records.storable`); a row it still refuses fails its whole COPY, so that batch is then
written row by row and only the refused rows are dropped (and counted). A database that does
not answer keeps the batch's rows (within the bound) for the next try; meanwhile `state` is
"degraded". `close` writes what is left, within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

import asyncpg
import msgspec
import structlog

from modelrouter.config import HistorySettings
from modelrouter.history.records import COLUMNS, Record, storable
from modelrouter.history.schema import TABLE, migrate
from modelrouter.observability import Metrics

log = structlog.get_logger("modelrouter.history")
State = Literal["starting", "ok", "degraded"]
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# A row's own fault, not the database's: a value PostgreSQL refuses (SQLSTATE classes 22 and
# 23, or a row past a size limit), or one the client library cannot encode (a ValueError, its
# own DataError among them; an OverflowError; a TypeError). Writing the row again cannot help.
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    ValueError,
    OverflowError,
    TypeError,
)
LOGGED_IDS = 5  # request ids named in the log line of refused rows (they are all counted)


class HistoryWriter:
    def __init__(
        self,
        pool: Any,
        settings: HistorySettings,
        metrics: Metrics,
        *,
        timeout: float = 5.0,
        migrate_timeout: float = 600.0,
        min_retry: float = 0.2,
        max_retry: float = 10.0,
        purge_every: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.timeout = timeout
        self.migrate_timeout = migrate_timeout
        # A full queue is a full batch: a queue smaller than the batch is flushed when full.
        self.batch_rows = min(settings.batch_rows, settings.queue_rows)
        self.min_retry = min_retry
        self.max_retry = max_retry
        self.purge_every = purge_every
        self.queue: deque[Record] = deque()
        self.state: State = "starting"
        self.migrated = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry = min_retry
        self._next_purge = 0.0

    # -- the request side (through web.accounting, off the request path) --------------------
    def add(self, record: Record) -> None:
        queue = self.queue
        if len(queue) >= self.settings.queue_rows:
            queue.popleft()
            self.metrics.history_dropped.inc()
        queue.append(record)
        # Set here, not only when a batch is written: with the database away from the start,
        # no batch is ever taken, and the alert and dashboard read this gauge.
        self.metrics.history_queue.set(len(queue))
        if len(queue) >= self.batch_rows:
            self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop the loop, then write what is queued (for at most `timeout` seconds)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.queue and await self._step():
                    pass
        if self.queue:
            log.warning("history_unwritten", rows=len(self.queue))

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ok = await self._step()
            wait = self.settings.flush_seconds if ok else self._retry
            self._retry = self.min_retry if ok else min(self._retry * 2, self.max_retry)
            if ok and loop.time() >= self._next_purge:
                self._next_purge = loop.time() + self.purge_every
                await self._purge()
            if len(self.queue) < self.batch_rows or not ok:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _step(self) -> bool:
        """Migrate if not yet done, then write one batch. False when the database failed."""
        try:
            if not self.migrated:
                async with asyncio.timeout(self.migrate_timeout):
                    await self._migrate()
            async with asyncio.timeout(self.timeout):
                await self._flush()
        except DB_ERRORS as exc:
            self._failed("write" if self.migrated else "migrate", exc)
            return False
        except Exception as exc:  # a bug must not stop the history for good: retried later
            log.exception("history_write_crashed")
            self._failed("write", exc)
            return False
        if self.state != "ok":
            log.info("history_connected" if self.state == "starting" else "history_recovered")
            self.state = "ok"
        return True

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn:
            applied = await migrate(conn, timeout=self.migrate_timeout)
        if applied:
            log.info("history_migrated", versions=applied)
        self.migrated = True

    async def _flush(self) -> None:
        queue = self.queue
        pending = deque(storable(queue.popleft()) for _ in range(min(len(queue), self.batch_rows)))
        if not pending:
            return
        try:
            async with self.pool.acquire() as conn:
                try:
                    await _copy(conn, pending)
                except DATA_ERRORS:
                    await self._one_by_one(conn, pending)
                else:
                    self.metrics.history_rows.inc(len(pending))
                    pending.clear()
        except BaseException as exc:
            self._put_back(pending)  # what is not written yet (all of it, or the rest)
            if isinstance(exc, asyncpg.UndefinedTableError):
                self.migrated = False  # the table went away (a new database): create it again
            raise
        finally:
            self.metrics.history_queue.set(len(queue))

    async def _one_by_one(self, conn: Any, pending: deque[Record]) -> None:
        """Write `pending` a row at a time, dropping (and counting) the rows refused: the rest
        of the batch is written. Rows leave `pending` as they are done, so a database lost
        midway leaves the unwritten ones there."""
        refused: list[tuple[str, str]] = []
        try:
            while pending:
                row = pending[0]
                try:
                    await _copy(conn, (row,))
                except DATA_ERRORS as exc:
                    refused.append((row.request_id, type(exc).__name__))
                else:
                    self.metrics.history_rows.inc()
                pending.popleft()
        finally:
            if refused:
                self._refused(refused)

    def _refused(self, refused: list[tuple[str, str]]) -> None:
        self.metrics.history_rejected.inc(len(refused))
        # The error's class only: a message may quote the row's content (PostgreSQL's
        # "Failing row contains ...").
        log.warning(
            "history_rows_rejected",
            rows=len(refused),
            request_ids=[request_id for request_id, _ in refused[:LOGGED_IDS]],
            errors=sorted({error for _, error in refused}),
            message="rows the database refused were dropped; the rest of their batch is written",
        )

    def _put_back(self, rows: deque[Record]) -> None:
        """Unwritten rows go back in front, within the bound (the oldest are dropped)."""
        excess = len(rows) - max(self.settings.queue_rows - len(self.queue), 0)
        if excess > 0:
            self.metrics.history_dropped.inc(excess)
            for _ in range(excess):
                rows.popleft()
        self.queue.extendleft(reversed(rows))

    async def _purge(self) -> None:
        days = self.settings.retention_days
        if days <= 0:
            return
        try:
            async with asyncio.timeout(self.timeout * 6), self.pool.acquire() as conn:
                done = await conn.execute(
                    f"DELETE FROM {TABLE} WHERE created_at < now() - make_interval(days => $1)",  # noqa: S608 - a constant
                    days,
                )
        except DB_ERRORS as exc:
            self.metrics.history_errors.labels("purge").inc()
            log.warning("history_purge_failed", error=repr(exc))
            return
        purged = int(done.rsplit(" ", 1)[-1])
        if purged:
            log.info("history_purged", rows=purged, older_than_days=days)

    def _failed(self, op: str, exc: BaseException) -> None:
        self.metrics.history_errors.labels(op).inc()
        if self.state != "degraded":
            log.warning(
                "history_unavailable",
                op=op,
                error=repr(exc),
                message="requests are served; their history waits in a bounded queue",
            )
            self.state = "degraded"


async def _copy(conn: Any, rows: Iterable[Record]) -> None:
    records = [msgspec.structs.astuple(row) for row in rows]
    await conn.copy_records_to_table(TABLE, records=records, columns=COLUMNS)
