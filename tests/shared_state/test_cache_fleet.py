"""The response cache on a real Redis: shared by two gateway processes (answers and the
coalescing of identical requests), a lost lock holder, and Redis away (cache off, no failure)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from modelrouter.cache.key import cache_key
from modelrouter.schemas import ChatRequest, Message
from tests.conftest import GROQ_KEY, USER, Gateway, Mock, free_port, wait_until
from tests.scrape import Page, scrape
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import Replica, gateway_env

pytestmark = pytest.mark.redis
ZERO = {**USER, "temperature": 0}


def cache_env(mock: Mock, redis_url: str, prefix: str, spec: str = "") -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": mock.base(spec),
        "GROQ_RATE_LIMIT": "0",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "CACHE_MODE": "deterministic",
    }


async def post(
    session: aiohttp.ClientSession, replica: Replica, path: str = "/chat"
) -> tuple[int, str, bytes]:
    async with session.post(f"{replica.url}{path}", json=ZERO) as response:
        return (
            response.status,
            response.headers.get("x-modelrouter-cache", ""),
            await response.read(),
        )


async def test_the_redis_cache_is_shared_by_two_gateway_processes(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    first, second = await fleet(gateway_env(**cache_env(mock, redis_url, prefix)), 2)
    async with aiohttp.ClientSession() as session:
        status, cache, _ = await post(session, first)
        assert (status, cache) == (200, "miss")
        status, cache, _ = await post(session, second)
        assert (status, cache) == (200, "hit")
        streamed = await post(session, first, "/stream")
        assert streamed[1] == "miss"  # a stream is stored as a stream
        replayed = await post(session, second, "/stream")
        assert replayed[1:] == ("hit", streamed[2])
    assert await mock.count() == 2
    keys = [key async for key in rclient.scan_iter(f"{prefix}:*")]
    assert len(keys) == 2
    assert all(key.startswith(f"{prefix}:{{c:") and key.endswith(":answer:v1") for key in keys)
    for key in keys:
        assert 0 < await rclient.pttl(key) <= 3_600_000


async def test_identical_requests_on_two_replicas_cost_one_upstream_call(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str
) -> None:
    spec = "first_delay=0.5"
    replicas = await fleet(gateway_env(**cache_env(mock, redis_url, prefix, spec)), 2)
    connector = aiohttp.TCPConnector(limit=40, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(post(session, replicas[n % 2]) for n in range(20)))
    assert {status for status, _, _ in results} == {200}
    assert sorted(cache for _, cache, _ in results) == ["hit"] * 19 + ["miss"]
    assert await mock.count(spec) == 1


async def open_streams(session: aiohttp.ClientSession, replica: Replica) -> float:
    async with session.get(f"{replica.url}/metrics") as response:
        return Page(await response.text()).total("modelrouter_active_streams")


async def test_streams_that_join_an_identical_call_take_no_slot_on_any_replica(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str
) -> None:
    spec = "token_delay=0.1,tokens=20"  # 2 s: the others arrive while it runs
    env = cache_env(mock, redis_url, prefix, spec) | {"MAX_CONCURRENT_STREAMS": "2"}
    replicas = await fleet(gateway_env(**env), 2)
    connector = aiohttp.TCPConnector(limit=60, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        firsts = [asyncio.ensure_future(post(session, replica, "/stream")) for replica in replicas]

        async def both_slots_taken() -> bool:
            return [await open_streams(session, replica) for replica in replicas] == [1, 1]

        # One leads the call, the other waits on it through Redis: each holds a slot, so the
        # fleet-wide cap is reached, and still the identical streams that follow are served.
        await wait_until(both_slots_taken)
        others = await asyncio.gather(
            *(post(session, replicas[n % 2], "/stream") for n in range(48))
        )
        results = [await first for first in firsts] + others
    assert [status for status, _, _ in results] == [200] * 50
    assert len({body for _, _, body in results}) == 1
    assert await mock.count(spec) == 1


async def test_a_lost_lock_holder_blocks_the_others_no_longer_than_its_lease(
    gateway: Gateway, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    client = await gateway(**cache_env(mock, redis_url, prefix))
    request = ChatRequest(messages=[Message("user", "hello there")], temperature=0)
    key = cache_key(request, (("groq", "llama-3.3-70b-versatile"),), stream=False, with_user=False)
    # A replica took the lock, then died: nobody renews it.
    await rclient.set(f"{prefix}:{{c:{key}}}:lock:v1", "dead-holder", px=600)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.post("/chat", json=ZERO)
    waited = loop.time() - started
    assert (response.status, response.headers["x-modelrouter-cache"]) == (200, "miss")
    assert await mock.count() == 1
    print(f"waited {waited:.2f} s behind a dead holder's 0.6 s lease")


async def test_redis_away_turns_the_cache_off_and_never_fails_a_request(
    gateway: Gateway, mock: Mock
) -> None:
    env = cache_env(mock, f"redis://127.0.0.1:{free_port()}/0", "mrtest-away")
    client = await gateway(**env, REDIS_TIMEOUT="0.1")
    results: list[Any] = []
    for _ in range(3):
        response = await client.post("/chat", json=ZERO)
        results.append((response.status, response.headers["x-modelrouter-cache"]))
    assert results[0][0] == 200
    assert {status for status, _ in results} == {200}
    assert {cache for _, cache in results[1:]} == {"bypass"}  # paused after the first failure
    health = await (await client.get("/health")).json()
    assert (health["cache"], health["status"]) == ("degraded", "degraded")
    page = await scrape(client)
    assert page.value("modelrouter_cache_redis_errors_total") >= 1
    assert page.value("modelrouter_cache_requests_total", result="bypass") >= 2
