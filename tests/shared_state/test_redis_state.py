"""RedisState against a real Redis: the Lua scripts, pub/sub, the fallback and the handover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from modelrouter.config import RedisSettings
from modelrouter.observability import Metrics
from modelrouter.state import HealthRecord, Lease
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState
from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until
from tests.shared_state.support import RedisServer

pytestmark = pytest.mark.redis
MakeState = Callable[..., RedisState]


@pytest.fixture
async def make_state(prefix: str, rclient: aioredis.Redis) -> AsyncIterator[MakeState]:
    """RedisStates on this test's prefix (`rclient` deletes its keys afterwards)."""
    made: list[RedisState] = []

    def make(url: str, *, timeout: float = 0.25, replicas: int = 1) -> RedisState:
        settings = RedisSettings(key_prefix=prefix, timeout=timeout, expected_replicas=replicas)
        state = RedisState(
            connect(url, settings), settings=settings, metrics=Metrics(), min_wait=0.02
        )
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()


async def started(state: RedisState) -> RedisState:
    await state.start()
    return state


async def test_a_bucket_key_lives_exactly_until_the_bucket_is_full_again(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    state = await started(make_state(redis_url))
    await state.acquire_rate("rpm:groq", 6)  # one request holds 10 s of the window
    assert 9_000 < await rclient.pttl(state.key("rpm:groq")) <= 10_000
    await state.acquire_rate("rpm:groq", 6)
    await state.acquire_rate("rpm:groq", 6)
    assert 29_000 < await rclient.pttl(state.key("rpm:groq")) <= 30_000


async def test_a_bucket_from_the_future_is_clamped_to_one_full_window(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    """A TAT far ahead (written under a clock that has since moved back) waits one interval,
    not until that far-away time."""
    state = await started(make_state(redis_url))
    seconds, _micros = await rclient.time()
    await rclient.set(state.key("rpm:groq"), str(seconds + 10_000), ex=20_000)
    decision = await state.acquire_rate("rpm:groq", 6)
    assert not decision.allowed
    assert 0 < decision.retry_after <= 10.0


async def test_an_unlimited_provider_costs_no_round_trip(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    state = await started(make_state(redis_url))
    assert (await state.acquire_rate("rpm:ollama", 0)).allowed
    assert not await rclient.exists(state.key("rpm:ollama"))


async def test_keys_carry_the_prefix_a_hash_tag_and_the_script_version(
    make_state: MakeState, redis_url: str, prefix: str
) -> None:
    state = make_state(redis_url)
    assert state.key("rpm:groq") == f"{prefix}:{{groq}}:rpm:v1"
    assert state.key("streams") == f"{prefix}:{{streams}}:streams:v1"
    assert state.health_key("groq") == f"{prefix}:{{groq}}:health:v1"


async def test_scripts_are_loaded_again_after_the_server_forgets_them(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    state = await started(make_state(own_redis.url))
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.script_flush()
    assert (await state.acquire_rate("rpm:groq", 5)).allowed
    assert await state.acquire_lease("streams", 1, ttl=5) is not None
    assert state.mode == "redis"
    assert all(await admin.script_exists(state._scripts.gcra.sha))
    await admin.aclose()


async def test_leases_are_capped_renewed_released_and_expire_by_themselves(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    # A Redis that does not answer within the timeout sends a replica to its local leases (the
    # cap is then no longer cluster-wide): 2 s, not the file's 0.25 s, on a loaded machine.
    replica_a = await started(make_state(redis_url, timeout=2.0))
    replica_b = await started(make_state(redis_url, timeout=2.0))
    kept = await replica_a.acquire_lease("streams", 2, ttl=0.3)
    dropped = await replica_b.acquire_lease("streams", 2, ttl=0.3)
    assert kept is not None
    assert dropped is not None
    assert await replica_b.acquire_lease("streams", 2, ttl=0.3) is None  # cluster-wide cap
    for _ in range(3):  # `kept` is renewed, `dropped` is not (as if its replica died)
        await asyncio.sleep(0.15)
        await replica_a.renew_lease(kept, ttl=0.3)
    third = await replica_b.acquire_lease("streams", 2, ttl=0.3)
    assert third is not None, "the expired lease was pruned"
    members = set(await rclient.zrange(replica_a.key("streams"), 0, -1))
    assert members == {kept.token, third.token}
    await replica_a.release_lease(kept)
    await replica_b.release_lease(third)
    assert not await rclient.exists(replica_a.key("streams"))
    await replica_a.renew_lease(kept, ttl=5)  # renewing a released lease does not revive it
    assert not await rclient.exists(replica_a.key("streams"))


async def test_kept_leases_are_renewed_together_until_released(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    state = await started(make_state(redis_url))
    leases = [await state.acquire_lease("streams", 10, ttl=0.3) for _ in range(3)]
    assert all(lease is not None for lease in leases)
    for lease in leases:
        assert lease is not None
        state.keep_lease(lease, ttl=0.3, every=0.1)
    await asyncio.sleep(0.7)  # more than twice the TTL: only the renewals keep them
    key = state.key("streams")
    assert await rclient.zcard(key) == 3
    first = leases[0]
    assert first is not None
    await state.release_lease(first)
    await asyncio.sleep(0.25)  # a renewal pass ran since: it did not bring the released one back
    assert first.token not in set(await rclient.zrange(key, 0, -1))
    assert await rclient.zcard(key) == 2


async def test_a_release_whose_caller_is_cancelled_still_frees_the_slot(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    state = await started(make_state(redis_url))
    lease = await state.acquire_lease("streams", 1, ttl=30)
    assert lease is not None
    releasing = asyncio.create_task(state.release_lease(lease))
    await asyncio.sleep(0)  # the release has started: its command is queued
    releasing.cancel()
    await asyncio.gather(releasing, return_exceptions=True)
    await wait_until(lambda: _gone(rclient, state.key("streams")))


async def _gone(client: aioredis.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_health_is_merged_published_and_heard_by_every_replica(
    make_state: MakeState, redis_url: str
) -> None:
    writer = await started(make_state(redis_url))
    reader = await started(make_state(redis_url))
    heard: list[tuple[str, HealthRecord]] = []
    reader.watch_health(lambda provider, record: heard.append((provider, record)))
    until = time.time() + 60
    await writer.save_health("groq", HealthRecord(3, until, "server_error"))
    await wait_until(lambda: asyncio.sleep(0, bool(heard)))
    assert heard == [("groq", HealthRecord(3, until, "server_error", 1))]
    # A replica that saw the same outage late cannot lower the backoff or shorten the blacklist.
    await reader.save_health("groq", HealthRecord(1, until - 30, "timeout"))
    record = await writer.load_health("groq")
    assert (record.failures, record.blacklisted_until, record.last_reason) == (
        3,
        until,
        "server_error",
    )
    # A success resets it for everyone.
    await writer.save_health("groq", HealthRecord())
    await wait_until(lambda: asyncio.sleep(0, heard[-1][1].failures == 0))
    assert (await reader.load_health("groq")).failures == 0


async def test_a_lost_health_channel_is_resubscribed_and_the_limits_stay_on_redis(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis
) -> None:
    """Only the subscription's connection breaks (as in a Cluster slot migration): the limits
    still answer, so nothing goes local; the channel comes back, and a change made while it was
    away is read again."""
    writer = await started(make_state(redis_url))
    reader = await started(make_state(redis_url))
    await reader.load_health("groq")  # known, so read again after the resubscription
    heard: list[HealthRecord] = []
    reader.watch_health(lambda provider, record: heard.append(record))
    until = time.time() + 60
    with capture_logs() as logs:
        # The server drops the reader's subscription connection (found by its address).
        sockname = reader._feed._pubsub.connection._writer.get_extra_info("sockname")
        await rclient.client_kill(f"{sockname[0]}:{sockname[1]}")
        await writer.save_health("groq", HealthRecord(2, until, "server_error"))
        await wait_until(lambda: asyncio.sleep(0, any(r.failures == 2 for r in heard)))
        assert reader.mode == "redis"
        assert (await reader.acquire_rate("rpm:groq", 60)).allowed
        await writer.save_health("groq", HealthRecord(3, until, "server_error"))
        await wait_until(lambda: asyncio.sleep(0, any(r.failures == 3 for r in heard)))
    events = [line["event"] for line in logs]
    assert "redis_health_feed_lost" in events
    assert "redis_health_feed_restored" in events
    assert "redis_unavailable" not in events


async def test_a_record_older_than_the_one_known_is_ignored(
    make_state: MakeState, redis_url: str
) -> None:
    state = await started(make_state(redis_url))
    heard: list[HealthRecord] = []
    state.watch_health(lambda _, record: heard.append(record))
    state._heard("groq", HealthRecord(2, 5.0, "timeout", version=7))
    state._heard("groq", HealthRecord(1, 1.0, "timeout", version=6))
    state._heard("groq", HealthRecord(2, 5.0, "timeout", version=7))
    assert heard == [HealthRecord(2, 5.0, "timeout", version=7)]
    state._feed.handle(b"not json")  # a foreign message on the channel is ignored
    assert len(heard) == 1


async def test_unreachable_redis_serves_the_local_share_and_says_so_once(
    make_state: MakeState,
) -> None:
    with capture_logs() as logs:
        state = await started(make_state(f"redis://127.0.0.1:{free_port()}/0", replicas=3))
        assert state.mode == "degraded"
        allowed = [(await state.acquire_rate("rpm:groq", 30)).allowed for _ in range(11)]
        leases = [await state.acquire_lease("streams", 7, ttl=5) for _ in range(3)]
        await state.save_health("groq", HealthRecord(1, time.time() + 5, "timeout"))
    assert allowed == [True] * 10 + [False], "30/min over 3 replicas: 10 each"
    assert [lease is not None for lease in leases] == [True, True, False], "7 over 3: 2 each"
    assert state.leases_held("streams") == 2
    assert (await state.load_health("groq")).failures == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["redis_unavailable"]


async def test_recovery_hands_local_consumption_over_exactly_once(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    """6/min over 2 replicas: 2 taken on Redis, 2 locally while Redis hangs; afterwards the
    fleet's bucket has exactly 2 left, also after a second outage with nothing taken."""
    state = await started(make_state(own_redis.url, replicas=2))
    assert [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(2)] == [True] * 2
    own_redis.pause()
    local = [await state.acquire_rate("rpm:groq", 6) for _ in range(2)]  # the first times out
    assert state.mode == "degraded"
    assert [d.allowed for d in local] == [True, True]
    own_redis.resume()
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=10)
    own_redis.pause()
    await state.load_health("groq")  # times out: degraded again, with nothing taken meanwhile
    assert state.mode == "degraded"
    own_redis.resume()
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=10)
    after = [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(3)]
    assert after == [True, True, False]


async def test_going_local_carries_over_the_budget_used_so_far(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    """6/min over 2 replicas (3 each while local): 4 used through Redis leave 20 s of the
    window, so the local bucket allows 1 more, not a fresh 3. Back on Redis, the fleet's bucket
    holds the 4, plus the 1 (run by Redis after all: it timed out here), counted once."""
    state = await started(make_state(own_redis.url, replicas=2))
    assert [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(4)] == [True] * 4
    own_redis.pause()
    local = [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(3)]
    assert state.mode == "degraded"
    assert local == [True, False, False]
    own_redis.resume()
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=10)
    after = [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(2)]
    assert after == [True, False]


async def test_going_local_counts_the_streams_still_running_against_the_local_share(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    state = await started(make_state(own_redis.url, replicas=2))
    running = await state.acquire_lease("streams", 4, ttl=30)  # 4 over 2 replicas: 2 each
    assert running is not None
    own_redis.kill()
    local = await state.acquire_lease("streams", 4, ttl=30)
    assert state.mode == "degraded"
    assert local is not None
    assert await state.acquire_lease("streams", 4, ttl=30) is None, "1 running + 1 local"
    await state.release_lease(running)
    assert await state.acquire_lease("streams", 4, ttl=30) is not None


async def test_recovery_hands_over_live_local_leases_and_health(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    state = await started(make_state(own_redis.url))
    other = await started(make_state(own_redis.url))
    heard: list[HealthRecord] = []
    other.watch_health(lambda _, record: heard.append(record))
    await other.load_health("groq")  # as its provider actor does on start
    own_redis.kill()
    lease = await state.acquire_lease("streams", 5, ttl=30)
    assert state.mode == "degraded"
    assert lease is not None
    until = time.time() + 60
    await state.save_health("groq", HealthRecord(2, until, "server_error"))
    own_redis.start()
    await wait_until(lambda: asyncio.sleep(0, state.mode == other.mode == "redis"), timeout=10)
    admin = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    assert await admin.zrange(state.key("streams"), 0, -1) == [lease.token]
    await wait_until(lambda: asyncio.sleep(0, bool(heard)))
    assert (heard[-1].failures, heard[-1].blacklisted_until) == (2, until)
    await state.release_lease(lease)

    async def released() -> bool:
        return not await admin.exists(state.key("streams"))

    # The release is queued, nobody waits for its reply: it reaches Redis on its own (another
    # connection's EXISTS may be answered first).
    await wait_until(released)
    assert state.leases_held("streams") == 0
    await admin.aclose()


async def test_a_lease_released_while_redis_is_away_is_released_when_it_is_back(
    make_state: MakeState, own_redis: RedisServer
) -> None:
    state = await started(make_state(own_redis.url))
    lease = await state.acquire_lease("streams", 1, ttl=30)
    assert lease is not None
    own_redis.kill()
    await state.release_lease(lease)  # queued; the connection is gone: it is owed
    await wait_until(lambda: asyncio.sleep(0, state.mode == "degraded"))
    own_redis.start()  # (a fresh server: put the lease back as if it had survived)
    admin = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    seconds, _micros = await admin.time()
    await admin.zadd(state.key("streams"), {lease.token: seconds + 30})
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=10)
    await wait_until(lambda: _gone(admin, state.key("streams")))  # long before its 30 s TTL
    assert await state.acquire_lease("streams", 1, ttl=5) is not None
    await admin.aclose()


def test_a_lease_token_says_whether_it_is_local() -> None:
    settings = RedisSettings()
    state = RedisState(
        connect("redis://127.0.0.1:1/0", settings), settings=settings, metrics=Metrics()
    )
    assert state._local.local_lease(Lease("streams", f"{state._id}:7")) is None
    assert state._local.local_lease(Lease("streams", f"{state._id}:m:7")) == Lease("streams", "7")


async def test_a_running_stream_keeps_its_slot_past_the_lease_ttl(
    gateway: Gateway, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    """End to end on Redis: the process's lease keeper renews the slot while the stream runs."""
    env = two_providers(
        mock,
        groq="stall_after=1",
        MAX_CONCURRENT_STREAMS="1",
        STREAM_LEASE_TTL_SECONDS="0.3",
        STREAM_LEASE_RENEW_SECONDS="0.1",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
    )
    client = await gateway(**env)
    url = str(client.make_url("/stream"))
    async with aiohttp.ClientSession() as session:
        first = await session.post(url, json=USER)
        assert first.status == 200
        await first.content.readuntil(b"\n\n")
        for _ in range(4):  # well past the TTL: renewal keeps the slot
            await asyncio.sleep(0.25)
            async with session.post(url, json=USER) as second:
                assert second.status == 429
        first.close()

        async def admitted() -> bool:
            response = await session.post(url, json=USER)
            response.close()
            return response.status == 200

        await wait_until(admitted)
