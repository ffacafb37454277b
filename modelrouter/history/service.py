"""The history as the app holds it: its connection pool, its writer, and reads for the API."""

from __future__ import annotations

from typing import Any

import asyncpg

from modelrouter.config import HistorySettings
from modelrouter.history import queries
from modelrouter.history.records import HistoryRecord, Record
from modelrouter.history.writer import HistoryWriter, State
from modelrouter.observability import Metrics


class History:
    def __init__(
        self,
        dsn: str,
        settings: HistorySettings,
        metrics: Metrics,
        *,
        timeout: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.read_timeout = read_timeout
        # min_size=0: nothing connects now, so start-up never waits for the database.
        self.pool: Any = asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=settings.pool_size,
            timeout=timeout,
            command_timeout=read_timeout,
            max_inactive_connection_lifetime=60.0,
        )
        self.writer = HistoryWriter(self.pool, settings, metrics, timeout=timeout)

    @property
    def state(self) -> State:
        return self.writer.state

    def add(self, record: Record) -> None:
        self.writer.add(record)

    async def start(self) -> None:
        await self.pool  # min_size=0: no connection is made here
        self.writer.start()

    async def close(self, *, timeout: float = 5.0) -> None:
        await self.writer.close(timeout=timeout)
        self.pool.terminate()

    # The route checks its parameters first; a value that still fails to compare is the
    # query's fault (BadQuery: a 400), never the database being away (a retryable 503).
    async def page(
        self, client: str, filters: queries.Filters, *, limit: int, cursor: queries.Cursor | None
    ) -> tuple[list[HistoryRecord], str | None]:
        try:
            async with self.pool.acquire(timeout=self.read_timeout) as conn:
                return await queries.page(conn, client, filters, limit=limit, cursor=cursor)
        except asyncpg.DataError:
            raise queries.BadQuery("a filter is not one the history can compare") from None

    async def one(self, client: str, request_id: str) -> HistoryRecord | None:
        try:
            async with self.pool.acquire(timeout=self.read_timeout) as conn:
                return await queries.one(conn, client, request_id)
        except asyncpg.DataError:
            raise queries.BadQuery("the request id is not one the history can compare") from None
