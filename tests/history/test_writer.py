"""The history writer against the real PostgreSQL: rows with values the database cannot hold
are cleaned or dropped one by one (never their whole batch), the queue gauge tells the rows
that wait at all times, and any HISTORY_QUEUE_ROWS works whatever the batch size."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from structlog.testing import capture_logs

from modelrouter.config import HistorySettings, load_settings
from modelrouter.history.records import COLUMNS
from modelrouter.history.schema import MIGRATIONS, migrate
from modelrouter.history.writer import HistoryWriter
from modelrouter.observability import Metrics
from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until
from tests.history.conftest import record, rows
from tests.scrape import scrape

BIGINT_MAX = 2**63 - 1


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(database, min_size=0, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def value(metric: Any) -> float:
    return float(metric._value.get())


async def test_nul_characters_are_replaced_and_the_batch_is_written(
    pool: Any, database: str
) -> None:
    messages = json.dumps(
        [{"role": "user", "content": "a\x00b"}, {"role": "user", "content": "\\u0000"}]
    )
    assert "\\u0000" in messages  # the JSON escape PostgreSQL's jsonb refuses
    metrics = Metrics()
    writer = HistoryWriter(pool, HistorySettings(), metrics)
    writer.add(record(1))
    writer.add(record(2, answer="x\x00y", model="m\x00", messages=messages))
    writer.add(record(3))
    assert await writer._step()
    found = await rows(database)
    assert [row["request_id"] for row in found] == ["r1", "r2", "r3"]
    assert (found[1]["answer"], found[1]["model"]) == ("x\ufffdy", "m\ufffd")
    # The NUL is replaced; a backslash followed by "u0000" was text, and stays so.
    assert json.loads(found[1]["messages"]) == [
        {"role": "user", "content": "a\ufffdb"},
        {"role": "user", "content": "\\u0000"},
    ]
    assert value(metrics.history_rows) == 3
    assert writer.state == "ok"


async def test_token_counts_past_32_bits_are_kept_and_past_64_bits_clamped(
    pool: Any, database: str
) -> None:
    writer = HistoryWriter(pool, HistorySettings(), Metrics())
    writer.add(record(1, prompt_tokens=2**40, completion_tokens=2**31))
    writer.add(record(2, prompt_tokens=2**70, completion_tokens=-(2**70)))
    assert await writer._step()
    found = await rows(database)
    assert (found[0]["prompt_tokens"], found[0]["completion_tokens"]) == (2**40, 2**31)
    assert (found[1]["prompt_tokens"], found[1]["completion_tokens"]) == (
        BIGINT_MAX,
        -BIGINT_MAX - 1,
    )


async def test_a_row_the_database_refuses_is_dropped_alone_counted_and_later_rows_follow(
    pool: Any, database: str
) -> None:
    metrics = Metrics()
    writer = HistoryWriter(pool, HistorySettings(), metrics)
    writer.add(record(1))
    writer.add(record(2, status=2**40))  # refused by the client library (not an int4)
    writer.add(record(3))
    writer.add(record(4, messages="not json"))  # refused by the server
    writer.add(record(5))
    with capture_logs() as logs:
        assert await writer._step()
    assert [row["request_id"] for row in await rows(database)] == ["r1", "r3", "r5"]
    assert value(metrics.history_rejected) == 2
    assert value(metrics.history_rows) == 3
    assert value(metrics.history_dropped) == 0
    assert writer.state == "ok"
    assert not writer.queue
    (line,) = [log for log in logs if log["event"] == "history_rows_rejected"]
    assert line["rows"] == 2
    assert line["request_ids"] == ["r2", "r4"]
    assert "not json" not in str(line)  # the row's content stays out of the logs
    writer.add(record(6))
    assert await writer._step()
    assert [row["request_id"] for row in await rows(database)] == ["r1", "r3", "r5", "r6"]


class FailingAfter:
    """A pool whose connections refuse one row's data, then lose the database."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.copies = 0

    def acquire(self) -> Any:
        outer = self

        class Acquired:
            async def __aenter__(self) -> Any:
                conn = await outer.pool.acquire()
                self.conn = conn

                class Conn:
                    async def copy_records_to_table(self, *args: Any, **kw: Any) -> Any:
                        outer.copies += 1
                        if outer.copies == 1:
                            raise asyncpg.DataError("a value the database refuses")
                        if outer.copies == 3:
                            raise OSError("connection lost")
                        return await conn.copy_records_to_table(*args, **kw)

                return Conn()

            async def __aexit__(self, *exc: object) -> None:
                await outer.pool.release(self.conn)

        return Acquired()


async def test_losing_the_database_while_writing_one_by_one_keeps_the_unwritten_rows(
    pool: Any, database: str
) -> None:
    metrics = Metrics()
    writer = HistoryWriter(FailingAfter(pool), HistorySettings(), metrics)
    async with pool.acquire() as conn:
        await migrate(conn)
    writer.migrated = True
    for n in range(1, 4):
        writer.add(record(n))
    assert not await writer._step()  # r1 written alone, then the database went away
    assert writer.state == "degraded"
    assert [r.request_id for r in writer.queue] == ["r2", "r3"]
    assert value(metrics.history_rejected) == 0
    assert value(metrics.history_queue) == 2
    assert await writer._step()
    assert [row["request_id"] for row in await rows(database)] == ["r1", "r2", "r3"]
    assert value(metrics.history_queue) == 0


# -- the queue gauge -----------------------------------------------------------------------------
class DownPool:
    """A pool whose database never answers."""

    def acquire(self) -> Any:
        raise OSError("connection refused")


async def test_the_queue_gauge_counts_rows_waiting_while_the_database_never_answered() -> None:
    metrics = Metrics()
    writer = HistoryWriter(DownPool(), HistorySettings(queue_rows=3), metrics)
    writer.add(record(1))
    writer.add(record(2))
    assert value(metrics.history_queue) == 2
    assert not await writer._step()  # the migration fails: no batch was even taken
    assert value(metrics.history_queue) == 2
    for n in range(3, 6):
        writer.add(record(n))
    assert value(metrics.history_queue) == 3  # full: the oldest were dropped


async def test_the_queue_gauge_reads_the_rows_of_a_gateway_whose_database_refuses_connections(
    gateway: Gateway, mock: Mock
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    client = await gateway(**two_providers(mock, DATABASE_URL=url, HISTORY_FLUSH_SECONDS="0.05"))
    for _ in range(3):
        assert (await client.post("/chat", json=USER)).status == 200

    async def degraded() -> bool:
        return bool((await (await client.get("/health")).json())["history"] == "degraded")

    await wait_until(degraded)
    page = await scrape(client)  # a scrape counts every request finished so far
    assert page.value("modelrouter_history_queue_rows") == 3
    assert page.value("modelrouter_history_rejected_total") == 0


async def test_the_queue_gauge_falls_to_zero_once_the_rows_are_written(pool: Any) -> None:
    metrics = Metrics()
    writer = HistoryWriter(pool, HistorySettings(), metrics)
    writer.add(record(1))
    writer.add(record(2))
    assert value(metrics.history_queue) == 2
    assert await writer._step()
    assert value(metrics.history_queue) == 0


# -- the queue and the batch ---------------------------------------------------------------------
def test_a_queue_smaller_than_the_default_batch_is_accepted() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://db/mr", "HISTORY_QUEUE_ROWS": "10"})
    assert (settings.history.queue_rows, settings.history.batch_rows) == (10, 500)


async def test_a_queue_smaller_than_the_batch_flushes_when_full_and_keeps_every_row(
    pool: Any, database: str
) -> None:
    metrics = Metrics()
    writer = HistoryWriter(pool, HistorySettings(queue_rows=3, batch_rows=500), metrics)
    for n in range(1, 3):
        writer.add(record(n))
    assert not writer._wake.is_set()
    writer.add(record(3))
    assert writer._wake.is_set()  # a full queue is a full batch: written now, none dropped
    assert await writer._step()
    assert [row["request_id"] for row in await rows(database)] == ["r1", "r2", "r3"]
    assert value(metrics.history_dropped) == 0


async def test_a_database_of_the_first_schema_gets_64_bit_token_counts_and_keeps_its_rows(
    database: str,
) -> None:
    conn = await asyncpg.connect(database)
    try:
        first = MIGRATIONS[0]
        async with conn.transaction():
            await conn.execute(
                "CREATE TABLE modelrouter_schema ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute(first[1])
            await conn.execute("INSERT INTO modelrouter_schema (version) VALUES ($1)", first[0])
        first_columns = COLUMNS[: COLUMNS.index("answer") + 1]  # the first schema's
        await conn.copy_records_to_table(
            "modelrouter_requests",
            records=[msgspec.structs.astuple(record(1))[: len(first_columns)]],
            columns=first_columns,
        )
        assert await migrate(conn) == [version for version, _ in MIGRATIONS[1:]]
        kinds = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'modelrouter_requests' AND column_name LIKE '%_tokens'"
        )
        assert {row["data_type"] for row in kinds} == {"bigint"}
    finally:
        await conn.close()
    found = [(r["request_id"], r["prompt_tokens"], r["cost_nanos"]) for r in await rows(database)]
    assert found == [("r1", 1, None)]  # a row from before costs were kept: no cost
