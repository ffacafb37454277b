"""One contract for every SharedState backend: the same GCRA, lease and health cases, the same
expected decisions, in memory (the GCRA in Python, `memory.gcra`), on a single Redis server and
on a 3-master Redis Cluster (the GCRA in Lua, `scripts.GCRA`).

Refill cases sleep whole GCRA intervals with wide margins; they assert decisions, never timings.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from modelrouter.config import RedisSettings
from modelrouter.observability import Metrics
from modelrouter.state import HealthRecord, MemoryState, RateDecision, SharedState
from modelrouter.state.connect import connect
from modelrouter.state.memory import gcra
from modelrouter.state.redis import RedisState
from tests.shared_state.topology import Cluster

pytestmark = pytest.mark.redis
BACKENDS = ["memory", "redis", "cluster"]
SHARED = ["redis", "cluster"]

MakeState = Callable[[], Awaitable[SharedState]]


@pytest.fixture
async def make_backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[MakeState]:
    """States of the backend named by the test's parameter; several share one store."""
    kind: str = request.param
    made: list[SharedState] = []
    url = cluster = None
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
    elif kind == "cluster":
        topology: Cluster = request.getfixturevalue("redis_cluster")
        url, cluster = topology.url, True
    settings = RedisSettings(key_prefix=prefix, timeout=1.0, cluster=bool(cluster))

    async def make() -> SharedState:
        state: SharedState = MemoryState()
        if url is not None:
            state = RedisState(connect(url, settings), settings=settings, metrics=Metrics())
        await state.start()
        assert state.mode == ("memory" if url is None else "redis")
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()
    if url is not None:
        await _delete_keys(url, prefix, cluster=bool(cluster))


async def _delete_keys(url: str, prefix: str, *, cluster: bool) -> None:
    client: aioredis.Redis | aioredis.RedisCluster = (
        aioredis.RedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
    )
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    for key in keys:  # one by one: on a cluster they live in different slots
        await client.delete(key)
    await client.aclose()


def each(kinds: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("make_backend", kinds, indirect=True)


# -- rate limits (GCRA, burst = the per-minute limit) -------------------------------------------

# (per_minute, requests at once) -> the decisions every backend must give, Python or Lua.
BURSTS = [
    (6, 7),  # 6 at once from idle, then one every 10 s
    (7, 8),  # an interval that is not a whole number of seconds (60/7)
    (1, 2),
    (3, 3),  # exactly the burst: nothing refused yet
]


def expected_burst(per_minute: int, count: int) -> list[RateDecision]:
    """What `memory.gcra` decides for `count` requests at one instant: the reference."""
    tats: dict[str, float] = {}
    return [gcra(tats, "k", per_minute, 1000.0) for _ in range(count)]


@each(BACKENDS)
@pytest.mark.parametrize(("per_minute", "count"), BURSTS)
async def test_a_burst_gets_the_reference_decisions(
    make_backend: MakeState, per_minute: int, count: int
) -> None:
    state = await make_backend()
    got = [await state.acquire_rate("rpm:groq", per_minute) for _ in range(count)]
    want = expected_burst(per_minute, count)
    assert [(d.allowed, d.remaining) for d in got] == [(d.allowed, d.remaining) for d in want]
    for mine, reference in zip(got, want, strict=True):
        # Redis' clock moved on a little between the calls: retry_after can only shrink.
        assert reference.retry_after - 1.0 < mine.retry_after <= reference.retry_after + 1e-6


@each(BACKENDS)
async def test_buckets_are_independent_per_key(make_backend: MakeState) -> None:
    state = await make_backend()
    assert [(await state.acquire_rate("rpm:groq", 2)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert (await state.acquire_rate("rpm:openai", 2)).allowed


@each(BACKENDS)
async def test_a_used_up_bucket_lets_one_more_through_per_interval(
    make_backend: MakeState,
) -> None:
    state = await make_backend()
    per_minute = 60  # one request per second once the burst is used
    for _ in range(per_minute):
        assert (await state.acquire_rate("rpm:groq", per_minute)).allowed
    refused = await state.acquire_rate("rpm:groq", per_minute)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1.0
    await asyncio.sleep(1.1)  # one interval (and a margin of 0.9 s before the next one)
    assert (await state.acquire_rate("rpm:groq", per_minute)).allowed
    assert not (await state.acquire_rate("rpm:groq", per_minute)).allowed


@each(BACKENDS)
async def test_no_limit_is_always_allowed(make_backend: MakeState) -> None:
    state = await make_backend()
    decisions = [await state.acquire_rate("rpm:ollama", 0) for _ in range(100)]
    assert all(d.allowed and d.remaining > 1_000_000 for d in decisions)


@each(SHARED)
async def test_every_replica_draws_on_one_bucket(make_backend: MakeState) -> None:
    first, second = await make_backend(), await make_backend()
    allowed = [
        (await (first if i % 2 else second).acquire_rate("rpm:groq", 5)).allowed for i in range(8)
    ]
    assert allowed == [True] * 5 + [False] * 3


# -- leases ----------------------------------------------------------------------------------


def ttl_for(state: SharedState, ttl: float) -> float:
    """As the stream handler does: leases that cannot be lost need no TTL."""
    return ttl if state.leases_expire else math.inf


@each(BACKENDS)
async def test_leases_are_capped_and_a_release_frees_a_slot(make_backend: MakeState) -> None:
    state = await make_backend()
    ttl = ttl_for(state, 30)
    first = await state.acquire_lease("streams", 2, ttl=ttl)
    second = await state.acquire_lease("streams", 2, ttl=ttl)
    assert first is not None
    assert second is not None
    assert await state.acquire_lease("streams", 2, ttl=ttl) is None
    assert await state.acquire_lease("other", 2, ttl=ttl) is not None, "caps are per key"
    await state.release_lease(first)
    await state.release_lease(first)  # twice: harmless
    third = await state.acquire_lease("streams", 2, ttl=ttl)
    assert third is not None
    assert third.token != first.token
    assert await state.acquire_lease("streams", 2, ttl=ttl) is None


@each(BACKENDS)
async def test_a_lease_not_renewed_expires_and_a_renewed_one_is_kept(
    make_backend: MakeState,
) -> None:
    state = await make_backend()
    kept = await state.acquire_lease("streams", 2, ttl=0.5)
    dropped = await state.acquire_lease("streams", 2, ttl=0.5)
    assert kept is not None
    assert dropped is not None
    for _ in range(3):
        await asyncio.sleep(0.25)
        await state.renew_lease(kept, ttl=0.5)
    assert await state.acquire_lease("streams", 2, ttl=0.5) is not None, "`dropped` expired"
    assert await state.acquire_lease("streams", 2, ttl=0.5) is None, "`kept` still counts"


@each(BACKENDS)
async def test_a_kept_lease_outlives_its_ttl_until_released(make_backend: MakeState) -> None:
    state = await make_backend()
    ttl = ttl_for(state, 0.3)
    lease = await state.acquire_lease("streams", 1, ttl=ttl)
    assert lease is not None
    state.keep_lease(lease, ttl=ttl, every=0.1)
    await asyncio.sleep(0.7)  # more than twice the TTL
    assert await state.acquire_lease("streams", 1, ttl=ttl) is None
    await state.release_lease(lease)
    assert await state.acquire_lease("streams", 1, ttl=ttl) is not None


@each(SHARED)
async def test_the_cap_holds_across_replicas(make_backend: MakeState) -> None:
    first, second = await make_backend(), await make_backend()
    held = [await (first, second)[i % 2].acquire_lease("streams", 3, ttl=30) for i in range(5)]
    assert [lease is not None for lease in held] == [True, True, True, False, False]
    lease = held[1]
    assert lease is not None
    await second.release_lease(lease)
    # A release is on its way once called, nobody waits for its reply (a cancelled caller still
    # frees the slot): on another connection, the next acquire may reach Redis a hair earlier.
    for _ in range(100):
        if await first.acquire_lease("streams", 3, ttl=30) is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the slot released on one replica never became free on the other")


# -- health ----------------------------------------------------------------------------------


@each(BACKENDS)
async def test_health_is_saved_read_back_and_reset(make_backend: MakeState) -> None:
    state = await make_backend()
    assert await state.load_health("groq") == HealthRecord()
    until = time.time() + 60
    await state.save_health("groq", HealthRecord(2, until, "server_error"))
    record = await state.load_health("groq")
    assert (record.failures, record.blacklisted_until, record.last_reason) == (
        2,
        until,
        "server_error",
    )
    assert (await state.load_health("openai")).failures == 0, "records are per provider"
    await state.save_health("groq", HealthRecord())
    assert (await state.load_health("groq")).failures == 0


@each(SHARED)
async def test_every_replica_hears_a_health_change(make_backend: MakeState) -> None:
    writer, reader = await make_backend(), await make_backend()
    heard: list[HealthRecord] = []
    reader.watch_health(lambda _, record: heard.append(record))
    await writer.save_health("groq", HealthRecord(1, time.time() + 30, "timeout"))
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert [record.failures for record in heard] == [1]
    assert (await reader.load_health("groq")).failures == 1
