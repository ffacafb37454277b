"""Spend rows that PostgreSQL could not take wait in Redis and are written when it answers
(issue 19 item 7), against the real Redis and a real PostgreSQL database of the test's own:
a replica stopped, or killed, while the database is away loses nothing; two drainers write
each row once; a drainer whose lock ran out removes nothing from the spool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from modelrouter.config import RedisSettings
from modelrouter.state.connect import connect
from modelrouter.tenants.spend import SpendLog, SpendRow, _encode
from modelrouter.tenants.spend_spool import SpendSpool
from tests.conftest import free_port, wait_until
from tests.history.conftest import rows
from tests.shared_state.topology import Cluster
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared

pytestmark = pytest.mark.redis


def new_rows(n: int, *, key_id: str = "key_a") -> list[SpendRow]:
    now = datetime.now(UTC)
    return [SpendRow(now, key_id, None, "groq", "mock-a", 1000 + i, f"req-{i}") for i in range(n)]


def spool_of(redis_url: str, prefix: str) -> SpendSpool:
    client = connect(redis_url, RedisSettings(key_prefix=prefix, timeout=2.0))
    return SpendSpool(client, prefix=prefix)


@pytest.fixture
async def dead_pool() -> AsyncIterator[Any]:
    """A pool on a port where nothing listens: PostgreSQL unreachable."""
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none", min_size=0, max_size=2
    )
    yield pool
    await pool.close()


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(database, min_size=0, max_size=4)
    yield pool
    await pool.close()


async def table(database: str) -> list[Any]:
    try:
        return await rows(database, "SELECT * FROM modelrouter_spend")
    except asyncpg.UndefinedTableError:
        return []


@pytest.mark.parametrize("started", [True, False], ids=["its-writer-spilled", "at-close"])
async def test_rows_of_a_replica_stopped_while_postgres_is_away_are_written_by_the_next(
    started: bool,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    database: str,
    dead_pool: Any,
    pool: Any,
) -> None:
    first_spool = spool_of(redis_url, prefix)
    first = SpendLog(dead_pool, spool=first_spool)
    if started:
        first.start()
    added = new_rows(250)
    for row in added:
        first.add(row)
    await first.close(timeout=2.0)  # the replica stops
    await first_spool.close()
    assert not first.queue
    assert await rclient.llen(f"{prefix}:{{spend}}:spool:v1") == 250

    second_spool = spool_of(redis_url, prefix)
    second = SpendLog(pool, spool=second_spool)  # a new replica, PostgreSQL back
    second.start()

    async def drained() -> bool:
        return await second_spool.length() == 0 and len(await table(database)) == 250

    await wait_until(drained, timeout=10)
    await second.close()
    await second_spool.close()
    written = await table(database)
    assert sorted(r["id"] for r in written) == sorted(r.id for r in added)
    assert sum(r["cost_nanos"] for r in written) == sum(r.cost_nanos for r in added)
    assert second.drained == 250


async def test_a_failed_write_spills_at_once_so_a_kill_loses_nothing(
    redis_url: str, prefix: str, database: str, dead_pool: Any, pool: Any
) -> None:
    spool = spool_of(redis_url, prefix)
    killed = SpendLog(dead_pool, spool=spool, flush_seconds=0.05)
    killed.start()
    added = new_rows(30)
    for row in added:
        killed.add(row)

    async def spilled() -> bool:
        return await spool.length() == 30

    await wait_until(spilled, timeout=5)
    assert not killed.queue
    assert killed._task is not None
    killed._task.cancel()  # a kill: nothing more runs, no close
    await asyncio.gather(killed._task, return_exceptions=True)

    after = SpendLog(pool, spool=spool)
    after.start()

    async def written() -> bool:
        return len(await table(database)) == 30 and await spool.length() == 0

    await wait_until(written, timeout=10)
    await after.close()
    await spool.close()


class SilentPool:
    """A database that does not answer at all (its packets dropped): an acquire never ends."""

    def acquire(self) -> Any:
        return self

    async def __aenter__(self) -> Any:
        await asyncio.Event().wait()

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_database_that_does_not_answer_at_all_does_not_hold_the_rows_in_memory(
    redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    spool = spool_of(redis_url, prefix)
    log = SpendLog(SilentPool(), spool=spool, flush_seconds=0.05, timeout=3600)
    log.start()
    for row in new_rows(30):
        log.add(row)

    async def spilled() -> bool:
        return await spool.length() == 30

    await wait_until(spilled, timeout=5)  # its write still waits, for up to an hour
    assert not log.queue
    await log.close(timeout=0.2)
    await spool.close()


async def test_two_drainers_at_once_write_each_row_once(
    redis_url: str, prefix: str, database: str, pool: Any
) -> None:
    filler = spool_of(redis_url, prefix)
    writer = SpendLog(pool, spool=filler)
    for row in new_rows(5000):
        writer.add(row)
    assert await writer._spill()  # what replicas that stopped while PostgreSQL was away left
    assert await filler.length() == 5000

    drainers = [SpendLog(pool, spool=spool_of(redis_url, prefix), batch_rows=300) for _ in "ab"]
    while await filler.length():
        await asyncio.gather(*(d.drain() for d in drainers))
    written = await table(database)
    assert len(written) == len({r["id"] for r in written}) == 5000
    # Each row went through one drainer only: the lock kept the other out.
    assert sum(d.drained for d in drainers) == 5000
    for d in drainers:
        assert d.spool is not None
        await d.spool.close()
    await filler.close()


class GatedPool:
    """A pool whose spend inserts wait for `gate` (a drainer held up by a slow database)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def acquire(self) -> Any:
        return _Gated(self)


class _Gated:
    def __init__(self, owner: GatedPool) -> None:
        self.owner = owner
        self.inner: Any = None

    async def __aenter__(self) -> Any:
        self.inner = self.owner.pool.acquire()
        conn = await self.inner.__aenter__()
        owner = self.owner

        class Conn:
            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

            async def execute(self, query: str, *args: Any) -> Any:
                if query.startswith("INSERT INTO modelrouter_spend"):
                    owner.waiting.set()
                    await owner.gate.wait()
                return await conn.execute(query, *args)

        return Conn()

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)


async def test_a_drainer_whose_lock_ran_out_removes_nothing(
    redis_url: str, prefix: str, rclient: aioredis.Redis, database: str, pool: Any
) -> None:
    spool = spool_of(redis_url, prefix)
    filler = SpendLog(pool, spool=spool)
    for row in new_rows(20):
        filler.add(row)
    assert await filler._spill()

    gated = GatedPool(pool)
    slow = SpendLog(gated, spool=spool_of(redis_url, prefix), batch_rows=10)
    slow_drain = asyncio.create_task(slow.drain())
    await gated.waiting.wait()  # it read the first 10 rows and is writing them
    await rclient.delete(f"{prefix}:{{spend}}:drain:v1")  # its lease runs out meanwhile

    other = SpendLog(pool, spool=spool_of(redis_url, prefix))
    assert await other.drain() == 20
    later = new_rows(10, key_id="key_later")  # spilled by some replica since
    for row in later:
        filler.add(row)
    assert await filler._spill()

    gated.gate.set()
    assert await slow_drain == 0  # its batch written again (once), but not removed
    assert await spool.length() == 10  # the later rows wait for the next drain
    assert await other.drain() == 10
    written = await table(database)
    assert len(written) == len({r["id"] for r in written}) == 30
    for log in (slow, other):
        assert log.spool is not None
        await log.spool.close()
    await spool.close()


async def test_without_redis_the_rows_wait_in_memory(database: str, dead_pool: Any) -> None:
    log = SpendLog(dead_pool, min_retry=0.01, max_retry=0.02)
    log.start()
    for row in new_rows(5):
        log.add(row)
    await log.close(timeout=0.5)
    assert len(log.queue) == 5  # what `spend_unwritten` reports: lost with the process
    assert log.spilled == 0


async def test_the_spool_works_on_a_redis_cluster(
    redis_cluster: Cluster, prefix: str, database: str, dead_pool: Any, pool: Any
) -> None:
    def cluster_spool() -> SpendSpool:
        settings = RedisSettings(key_prefix=prefix, timeout=2.0, cluster=True)
        return SpendSpool(connect(redis_cluster.url, settings), prefix=prefix)

    stopped_spool = cluster_spool()
    stopped = SpendLog(dead_pool, spool=stopped_spool)
    for row in new_rows(40):
        stopped.add(row)
    await stopped.close(timeout=1.0)
    assert await stopped_spool.length() == 40

    spools = [cluster_spool(), cluster_spool()]
    drainers = [SpendLog(pool, spool=s, batch_rows=15) for s in spools]
    await asyncio.gather(*(d.drain() for d in drainers))
    assert sum(d.drained for d in drainers) == 40
    assert await stopped_spool.length() == 0
    assert len(await table(database)) == 40
    for spool in (stopped_spool, *spools):
        await spool.client.delete(spool.key, spool.lock_key)
        await spool.close()


async def test_a_full_spool_or_no_redis_keeps_the_rows_in_memory(
    redis_url: str, prefix: str, rclient: aioredis.Redis, dead_pool: Any
) -> None:
    client = connect(redis_url, RedisSettings(key_prefix=prefix, timeout=2.0))
    spool = SpendSpool(client, prefix=prefix, max_rows=30)
    log = SpendLog(dead_pool, spool=spool)
    for row in new_rows(25):
        log.add(row)
    assert await log._spill()
    for row in new_rows(10):
        log.add(row)
    assert not await log._spill()  # 35 rows would pass the cap: none of the 10 is appended
    assert (await spool.length(), len(log.queue), log.spool_ok) == (25, 10, False)
    await spool.close()

    unreachable = connect(f"redis://127.0.0.1:{free_port()}/0", RedisSettings(key_prefix=prefix))
    away = SpendLog(dead_pool, spool=SpendSpool(unreachable, prefix=prefix))
    for row in new_rows(5):
        away.add(row)
    await away.close(timeout=1.0)
    assert (len(away.queue), away.spilled) == (5, 0)  # `spend_unwritten`: lost with the process
    await unreachable.aclose()


async def test_reads_count_the_spooled_rows_once_whether_written_yet_or_not(
    redis_url: str, prefix: str, database: str, pool: Any, rclient: aioredis.Redis
) -> None:
    # Rows that wait in the spool are spend already: a report, or a budget reloaded, counts
    # them; a row both written and still spooled (a drain between its write and its trim)
    # is counted once; a spool Redis cannot read is said, not hidden.
    spool = spool_of(redis_url, prefix)
    log = SpendLog(pool, spool=spool)
    written, waiting = new_rows(20), new_rows(30, key_id="key_b")
    for row in written:
        log.add(row)
    assert await log._step()
    await spool.spill([_encode(r) for r in [*written[:5], *waiting]])
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    groups, uncounted = await log.report("key", start, end)
    assert uncounted == 0
    expected = {
        "key_a": (sum(r.cost_nanos for r in written), 20),
        "key_b": (sum(r.cost_nanos for r in waiting), 30),
    }
    assert {g.group: (g.nanos, g.requests) for g in groups} == expected
    one, _ = await log.report("model", start, end, key_id="key_b")
    assert [(g.group, g.nanos, g.requests) for g in one] == [("groq/mock-a", *expected["key_b"])]
    assert await log.spent("key_a", None) == expected["key_a"][0]
    assert await log.spent("key_b", start) == expected["key_b"][0]

    assert await log.drain() == 35
    assert {g.group: (g.nanos, g.requests) for g in (await log.report("key", start, end))[0]} == (
        expected
    )
    await spool.spill([_encode(r) for r in waiting[:3]])
    gone = SpendLog(pool, spool=spool_of("redis://127.0.0.1:1", prefix))  # Redis unreachable
    groups, uncounted = await gone.report("key", start, end)
    assert uncounted is None
    assert {g.group: (g.nanos, g.requests) for g in groups} == expected
    await gone.spool.close()  # type: ignore[union-attr]
    await rclient.delete(spool.key)
    await spool.close()
