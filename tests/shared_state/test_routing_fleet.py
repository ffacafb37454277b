"""Routing-file strategies across two gateway processes sharing a Redis: `least-busy` counts
the other replica's streams, `latency` ranks by what either replica measured, and a
deployment's `rpm` is one budget for the fleet. Shares and counts are asserted, never times."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from modelrouter.config import RedisSettings
from modelrouter.mock import start_mock
from modelrouter.mock.faults import Faults
from modelrouter.mock.server import STATE
from modelrouter.routing.fleet import REFRESH
from modelrouter.routing.fleet import Fleet as Shared
from modelrouter.routing.latency import Latency
from modelrouter.state.connect import connect
from tests.conftest import CLIENT_KEY, USER, Mock, wait_until
from tests.routing.support import write
from tests.routing.test_gateway import group_file
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import RedisServer, Replica, gateway_env

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def replica_env(path: str, redis_url: str, prefix: str) -> dict[str, str]:
    return gateway_env(
        API_KEY=CLIENT_KEY,
        PROVIDER_ORDER="groq",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        MODELROUTER_CONFIG=path,
        MAX_CONCURRENT_STREAMS="200",
    )


async def post(
    session: aiohttp.ClientSession, replica: Replica, *, stream: bool = False
) -> tuple[int, str]:
    body = {**USER, "model": "fast", "stream": stream}
    async with session.post(
        f"{replica.url}/v1/chat/completions", json=body, headers=AUTH
    ) as response:
        await response.read()
        return response.status, response.headers.get("x-modelrouter-provider", "?")


async def in_flight(session: aiohttp.ClientSession, replica: Replica) -> dict[str, dict[str, int]]:
    providers = (await replica.health(session))["providers"]
    return {
        name: {"here": p["in_flight"], "elsewhere": p.get("in_flight_elsewhere", 0)}
        for name, p in providers.items()
    }


async def test_least_busy_spreads_streams_over_the_fleet_within_one(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    urls = [mock.base(f"token_delay=0.05,tokens=60,first_delay=0.0{i}") for i in range(3)]
    path = write(tmp_path / "router.yaml", group_file("least-busy", urls))
    one, two = await fleet(replica_env(path, redis_url, prefix), 2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        first = [asyncio.create_task(post(session, one, stream=True)) for _ in range(32)]

        async def heard(count: int) -> bool:
            seen = await in_flight(session, two)
            return sum(p["elsewhere"] for p in seen.values()) == count

        await wait_until(lambda: heard(32), timeout=10)  # the second replica knows of them
        second = [asyncio.create_task(post(session, two, stream=True)) for _ in range(32)]

        async def all_running() -> bool:
            a, b = await in_flight(session, one), await in_flight(session, two)
            return sum(p["here"] for p in (*a.values(), *b.values())) == 64

        await wait_until(all_running, timeout=10)
        spreads = []
        for _ in range(5):  # a few looks while all 64 run
            a, b = await in_flight(session, one), await in_flight(session, two)
            totals = [a[name]["here"] + b[name]["here"] for name in a]
            assert sum(totals) == 64, (a, b)
            spreads.append(max(totals) - min(totals))
        assert sum(spreads) / len(spreads) <= 1, spreads
        results = await asyncio.gather(*first, *second)
    assert {status for status, _ in results} == {200}
    served = Counter(name for _, name in results)
    assert max(served.values()) - min(served.values()) <= 1, served


@pytest.fixture
async def three_mocks() -> AsyncIterator[list[tuple[Any, str]]]:
    """Three mock deployments whose first byte takes 10, 50 and 200 ms."""
    started = [await start_mock(defaults=Faults(first_delay=d)) for d in (0.01, 0.05, 0.2)]
    yield [(runner, f"http://127.0.0.1:{port}/v1") for runner, port in started]
    for runner, _ in started:
        await runner.cleanup()


async def test_latency_is_shared_so_the_fleet_follows_the_fastest_and_its_slowdown(
    fleet: Fleet,
    three_mocks: list[tuple[Any, str]],
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "router.yaml", group_file("latency", [u for _, u in three_mocks]))
    one, two = await fleet(replica_env(path, redis_url, prefix), 2)
    async with aiohttp.ClientSession() as session:
        warm = [(await post(session, one))[1] for _ in range(3)]
        assert sorted(warm) == ["d0", "d1", "d2"], "the first replica measures each once"

        async def two_has_read_it() -> bool:
            # The first replica publishes its d2 average (the last measured) within a refresh
            # period of its sample; the second's field is written in the round trip that
            # reads the others': once it is two periods newer than that sample, it has read it.
            fields = list((await rclient.hgetall(f"{prefix}:{{d2}}:fleet:v1")).values())
            parts = [v.split(" ") for v in fields]
            sampled = [float(p[4]) for p in parts if p[3] != "-"]
            other = [float(p[5]) for p in parts if p[3] == "-"]
            return len(sampled) == len(other) == 1 and other[0] > sampled[0] + 2 * REFRESH

        await wait_until(two_has_read_it, timeout=10)
        served = Counter([(await post(session, two))[1] for _ in range(60)])
        assert served["d0"] >= 54, f"the second replica, never having measured: {served}"
        # The fastest slows to 300 ms: at 50 requests a second over both replicas, within
        # 10 s at least 90% of the last 50 go to the new fastest (50 ms).
        three_mocks[0][0].app[STATE].defaults = Faults(first_delay=0.3)
        recent: list[str] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        pending: set[asyncio.Task[tuple[int, str]]] = set()
        turn = 0
        while loop.time() < end:
            turn += 1
            task = asyncio.create_task(post(session, (one, two)[turn % 2]))
            task.add_done_callback(lambda t: recent.append(t.result()[1]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0.02)  # 50 requests a second
            window = recent[-50:]
            if len(window) == 50 and window.count("d1") >= 45:
                break
        await asyncio.gather(*pending)
        window = recent[-50:]
        assert len(window) == 50, "at least 50 answered"
        assert window.count("d1") >= 45, Counter(window)


async def test_a_deployments_rpm_is_exact_across_two_replicas_and_its_own(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    specs = ["tokens=3", "tokens=4", "tokens=5"]
    text = group_file("ordered", [mock.base(s) for s in specs], rpm0="20", rpm1="30")
    path = write(tmp_path / "router.yaml", text)
    replicas = await fleet(replica_env(path, redis_url, prefix), 2)
    connector = aiohttp.TCPConnector(limit=100, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(post(session, replicas[i % 2]) for i in range(100)))
    assert {status for status, _ in results} == {200}
    assert Counter(name for _, name in results) == {"d0": 20, "d1": 30, "d2": 50}
    assert [await mock.count(s) for s in specs] == [20, 30, 50]


class Numbers:
    """What the fleet reads and sets on a provider actor."""

    def __init__(self, name: str, in_flight: int = 0) -> None:
        self.name = name
        self.in_flight = in_flight
        self.elsewhere = 0
        self.latency = Latency()


async def test_two_fleets_hear_each_other_and_forget_a_replica_that_stops(
    redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    mine, theirs = [Numbers("d0", 2), Numbers("d1", 5)], [Numbers("d0", 3), Numbers("d1", 0)]
    theirs[1].latency.observe(0.04, stream=True)
    settings = RedisSettings(timeout=1.0)
    one = Shared(connect(redis_url, settings), prefix, lambda: mine, me="one")
    two = Shared(connect(redis_url, settings), prefix, lambda: theirs, me="two")
    await one.refresh()
    await two.refresh()
    await one.refresh()
    assert [n.elsewhere for n in mine] == [3, 0]
    assert [n.elsewhere for n in theirs] == [2, 5]
    assert mine[1].latency.estimate(stream=True) == 0.04, "heard from the other replica"
    assert await rclient.pttl(f"{prefix}:{{d0}}:fleet:v1") > 0, "the hash expires by itself"
    await two.close()  # its fields go with it
    await one.refresh()
    assert [n.elsewhere for n in mine] == [0, 0]
    assert set(await rclient.hgetall(f"{prefix}:{{d0}}:fleet:v1")) == {"one"}
    await rclient.hset(f"{prefix}:{{d0}}:fleet:v1", "dead", f"7 - 0.0 - 0.0 {time.time() - 60}")
    await one.refresh()
    assert mine[0].elsewhere == 0, "a replica silent for longer than STALE is not counted"
    assert set(await rclient.hgetall(f"{prefix}:{{d0}}:fleet:v1")) == {"one"}, "and deleted"
    await one.close()


async def test_without_redis_each_replica_ranks_on_its_own_numbers(
    own_redis: RedisServer, prefix: str
) -> None:
    mine = [Numbers("d0", 1)]
    fleet = Shared(connect(own_redis.url, RedisSettings(timeout=0.2)), prefix, lambda: mine)
    mine[0].elsewhere = 4
    mine[0].latency.heard((0.5, time.time()), None)
    own_redis.kill()
    with capture_logs() as logs:
        await fleet.refresh()
        await fleet.refresh()
    assert mine[0].elsewhere == 0
    assert mine[0].latency.estimate(stream=True) is None
    assert [e["event"] for e in logs] == ["fleet_routing_local"], "logged once per outage"
    assert not fleet.up
    await fleet.close()
