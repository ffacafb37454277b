"""The issue's "done when" list: real gateway processes against a real Redis.

Timings are measured and printed (run with -s to see them), never asserted.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import GROQ_KEY, OPENROUTER_KEY, USER, Mock, wait_until
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import RedisServer, Replica, gateway_env

pytestmark = pytest.mark.redis
GROQ_SPEC = "tokens=8"  # a prefix of its own on the mock, so the two providers count apart


def fleet_env(
    mock: Mock, redis_url: str, prefix: str, groq: str = GROQ_SPEC, **extra: str
) -> dict[str, str]:
    return gateway_env(
        PROVIDER_ORDER="groq,openrouter",
        GROQ_API_KEY=GROQ_KEY,
        GROQ_BASE_URL=mock.base(groq),
        OPENROUTER_API_KEY=OPENROUTER_KEY,
        OPENROUTER_BASE_URL=mock.base(),
        OPENROUTER_RATE_LIMIT="0",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        **extra,
    )


async def chat(session: aiohttp.ClientSession, replica: Replica) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{replica.url}/chat", json=USER) as response:
        return response.status, await response.json()


async def send_spread(replicas: list[Replica], count: int) -> list[tuple[int, dict[str, Any]]]:
    connector = aiohttp.TCPConnector(limit=count, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(
            *(chat(session, replicas[i % len(replicas)]) for i in range(count))
        )


async def next_message(pubsub: Any, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if message is not None:
                return dict(message)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_three_replicas_send_exactly_the_fleet_limit_to_the_provider(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    replicas = await fleet(fleet_env(mock, redis_url, prefix, GROQ_RATE_LIMIT="20"), 3)
    results = await send_spread(replicas, 60)
    assert [status for status, _ in results] == [200] * 60
    assert await mock.count(GROQ_SPEC) == 20
    assert await mock.count("") == 40
    providers = sorted(body["provider"] for _, body in results)
    assert providers == ["groq"] * 20 + ["openrouter"] * 40
    # The bucket's key lives until the bucket is full again: at most the one-minute window.
    assert 0 < await rclient.pttl(f"{prefix}:{{groq}}:rpm:v1") <= 60_000


async def test_two_workers_of_one_serve_share_the_limit_and_sum_their_metrics(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    (server,) = await fleet(fleet_env(mock, redis_url, prefix, GROQ_RATE_LIMIT="20"), workers=2)
    mine = f"modelrouter:{prefix}:"  # + the worker's pid

    async def both_workers_up() -> bool:
        names = {c["name"] for c in await rclient.client_list() if c["name"].startswith(mine)}
        return len(names) == 2

    await wait_until(both_workers_up, timeout=20)  # the port answers as soon as one listens
    results = await send_spread([server], 60)
    assert [status for status, _ in results] == [200] * 60
    assert await mock.count(GROQ_SPEC) == 20
    assert await mock.count("") == 40
    # Both workers served requests: each one's connections to Redis last ran the GCRA script.
    clients = await rclient.client_list()
    served = {c["name"] for c in clients if c["name"].startswith(mine) and c["cmd"] == "evalsha"}
    assert len(served) == 2
    # Each scrape lands on either worker and shows the sum over both (no sawtooth).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(6):
            async with s.get(f"{server.url}/metrics") as response:
                text = await response.text()
            total = 'modelrouter_requests_total{method="POST",route="/chat",status="200"}'
            assert metric(text, total) == 60
            assert metric(text, 'modelrouter_provider_success_total{provider="groq"}') == 20


async def test_a_failure_seen_by_one_replica_stops_the_others_calling_the_provider(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    env = fleet_env(mock, redis_url, prefix, groq="status=500", BACKOFF_BASE_SECONDS="60")
    first, *others = await fleet(env, 3)
    pubsub = rclient.pubsub()
    await pubsub.subscribe(f"{prefix}:health:v1")
    async with aiohttp.ClientSession() as session:
        status, body = await chat(session, first)
        assert (status, body["provider"]) == (200, "openrouter")  # groq failed, fell over
        message = await next_message(pubsub)
        published = time.perf_counter()
        assert '"groq"' in message["data"]
        seen: dict[int, float] = {}

        async def blacklisted_everywhere() -> bool:
            for index, replica in enumerate(others):
                health = await replica.health(session)
                if health["providers"]["groq"]["state"] == "blacklisted":
                    seen.setdefault(index, time.perf_counter() - published)
            return len(seen) == len(others)

        await wait_until(blacklisted_everywhere, timeout=5)
        latencies = [f"{seconds * 1000:.1f} ms" for seconds in seen.values()]
        print(f"\nblacklist propagation after publish: {latencies}")
        for replica in others * 3:
            status, body = await chat(session, replica)
            assert (status, body["provider"]) == (200, "openrouter")
    assert await mock.count("status=500") == 1, "only the first replica ever called groq"
    await pubsub.aclose()


async def test_streams_cancelled_mid_way_on_random_replicas_leave_no_lease(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    env = fleet_env(
        mock,
        redis_url,
        prefix,
        groq="tokens=200,token_delay=0.05",
        GROQ_RATE_LIMIT="0",
        MAX_CONCURRENT_STREAMS="150",
    )
    replicas = await fleet(env, 3)
    leases = f"{prefix}:{{streams}}:streams:v1"
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        responses = await asyncio.gather(
            *(session.post(f"{rng.choice(replicas).url}/stream", json=USER) for _ in range(100))
        )
        assert [r.status for r in responses] == [200] * 100
        for response in responses:
            await response.content.readuntil(b"\n\n")  # streaming: the first chunk is here
        assert await rclient.zcard(leases) == 100
        order = list(responses)
        rng.shuffle(order)
        for response in order:
            for _ in range(rng.randrange(3)):
                await response.content.readuntil(b"\n\n")
            response.close()  # the client goes away mid-stream

    async def released() -> bool:
        return await rclient.zcard(leases) == 0 and (await mock.stats())["open_streams"] == 0

    await wait_until(released, timeout=10)
    assert not await rclient.exists(leases)


async def test_capacity_of_a_killed_replica_returns_within_the_lease_ttl(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    ttl = 2.0
    env = fleet_env(
        mock,
        redis_url,
        prefix,
        groq="stall_after=1",
        GROQ_RATE_LIMIT="0",
        MAX_CONCURRENT_STREAMS="3",
        STREAM_LEASE_TTL_SECONDS=str(ttl),
        STREAM_LEASE_RENEW_SECONDS="0.5",
        PROVIDER_TIMEOUT="120",
    )
    doomed, survivor = await fleet(env, 2)
    leases = f"{prefix}:{{streams}}:streams:v1"
    async with aiohttp.ClientSession() as session:
        held = [await session.post(f"{doomed.url}/stream", json=USER) for _ in range(3)]
        assert [r.status for r in held] == [200] * 3
        await asyncio.sleep(ttl * 1.5)  # past the TTL: only renewal keeps them
        async with session.post(f"{survivor.url}/stream", json=USER) as response:
            assert response.status == 429, "the fleet's 3 slots are held by the other replica"
        doomed.sigkill()
        killed_at = float(".".join(str(p) for p in await rclient.time()))
        killed = time.perf_counter()
        expiries = [score for _, score in await rclient.zrange(leases, 0, -1, withscores=True)]
        assert len(expiries) == 3
        assert max(expiries) <= killed_at + ttl, "no lease outlives the TTL after its last renewal"

        async def admitted() -> bool:
            response = await session.post(f"{survivor.url}/stream", json=USER)
            response.close()
            return response.status == 200

        await wait_until(admitted, timeout=ttl * 5)
        print(f"\ncapacity back {time.perf_counter() - killed:.2f} s after SIGKILL (TTL {ttl} s)")
        for response in held:
            response.close()


@pytest.mark.parametrize("outage", ["killed", "hung"])
async def test_redis_outage_under_load_degrades_then_recovers(
    fleet: Fleet, mock: Mock, own_redis: RedisServer, outage: str
) -> None:
    """Killed: connections refused at once. Hung (SIGSTOP): every call runs into REDIS_TIMEOUT."""
    env = fleet_env(mock, own_redis.url, "mr", GROQ_RATE_LIMIT="100000", REDIS_TIMEOUT="0.25")
    replicas = await fleet(env, 2)
    results: dict[str, list[tuple[int, float]]] = {"up": [], "down": [], "back": []}
    phase = "up"
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession, replica: Replica) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            status, _ = await chat(session, replica)
            results[phase].append((status, time.perf_counter() - started))

    async def modes(session: aiohttp.ClientSession) -> list[tuple[str, str]]:
        return [((h := await r.health(session))["status"], h["state_backend"]) for r in replicas]

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(load(session, r)) for r in replicas * 2]
        await asyncio.sleep(0.5)
        phase = "down"
        own_redis.kill() if outage == "killed" else own_redis.pause()

        async def degraded() -> bool:
            return await modes(session) == [("degraded", "degraded")] * 2

        await wait_until(degraded, timeout=5)
        await asyncio.sleep(1.0)
        own_redis.start() if outage == "killed" else own_redis.resume()
        phase = "back"

        async def recovered() -> bool:
            return await modes(session) == [("ok", "redis")] * 2

        await wait_until(recovered, timeout=15)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        async with session.get(f"{replicas[0].url}/metrics") as response:
            text = await response.text()
    for name, samples in results.items():
        assert samples, f"no request completed while Redis was {name}"
        assert {status for status, _ in samples} == {200}, name
        latencies = sorted(seconds for _, seconds in samples)
        print(
            f"\nredis {outage}, {name}: {len(samples)} requests, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
    assert metric(text, 'modelrouter_state_backend{mode="redis"}') == 1
    errors = re.findall(r"^modelrouter_redis_errors_total\{op=\"(\w+)\"\} (\S+)$", text, re.M)
    assert sum(float(value) for _, value in errors) >= 1
    print(f"redis errors counted on one replica: {errors}")
    # Shared state again: the requests after the recovery ran the limit's script on Redis.
    check = aioredis.Redis.from_url(own_redis.url)
    calls = (await check.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    assert calls > 0
    await check.aclose()


async def test_a_burst_of_streams_over_three_replicas_is_capped_exactly(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    """The lease commands of many streams share each replica's pipelined connection, and the
    cap still holds to the stream: 40 at once against 10 slots, 10 admitted."""
    env = fleet_env(
        mock,
        redis_url,
        prefix,
        groq="stall_after=1",
        GROQ_RATE_LIMIT="0",
        MAX_CONCURRENT_STREAMS="10",
        PROVIDER_TIMEOUT="60",
    )
    replicas = await fleet(env, 3)
    leases = f"{prefix}:{{streams}}:streams:v1"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        responses = await asyncio.gather(
            *(session.post(f"{replicas[i % 3].url}/stream", json=USER) for i in range(40))
        )
        statuses = sorted(r.status for r in responses)
        assert statuses == [200] * 10 + [429] * 30
        assert await rclient.zcard(leases) == 10
        for response in responses:
            response.close()

    async def released() -> bool:
        return await rclient.zcard(leases) == 0

    await wait_until(released, timeout=10)


async def test_a_slot_freed_on_one_replica_is_free_on_the_next_at_once(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str
) -> None:
    """A release is queued without waiting for its reply: it still reaches Redis before the
    client, told the stream is over, can start the next one elsewhere (one slot, ten times)."""
    env = fleet_env(mock, redis_url, prefix, GROQ_RATE_LIMIT="0", MAX_CONCURRENT_STREAMS="1")
    first, second = await fleet(env, 2)
    async with aiohttp.ClientSession() as session:
        for index in range(10):
            replica = (first, second)[index % 2]
            async with session.post(f"{replica.url}/stream", json=USER) as response:
                assert response.status == 200, f"stream {index}: {await response.text()}"
                assert b"[DONE]" in await response.read()
