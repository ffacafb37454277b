"""Budgets across two gateway processes sharing the real Redis and PostgreSQL (issue 19's "done
when"): 200 concurrent requests never spend past the budget, clients that disconnect leave no
reservation behind, spend survives PostgreSQL going away mid-traffic, and the `openai` SDK
gets `insufficient_quota` without retrying."""

from __future__ import annotations

import asyncio
import random
import re

import aiohttp
import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import wait_until
from tests.history.conftest import rows
from tests.shared_state.keyed_fleet import ASK, COST, KeyedFleet, new_key, post
from tests.shared_state.keyed_fleet import keyed_fleet as keyed_fleet  # noqa: PLC0414 - fixture
from tests.shared_state.keyed_fleet import pg_proxy as pg_proxy  # noqa: PLC0414 - the fixture
from tests.shared_state.support import Replica
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared
from tests.tenants.pgproxy import PgProxy

pytestmark = pytest.mark.redis
CENT = 10_000_000  # $0.01 in nano-dollars


async def history_cost(database: str) -> int:
    found = await rows(
        database, "SELECT coalesce(sum(cost_nanos), 0) AS s FROM modelrouter_requests"
    )
    return int(found[0]["s"])


async def test_200_concurrent_requests_over_two_replicas_never_pass_the_budget(
    keyed_fleet: KeyedFleet, rclient: aioredis.Redis
) -> None:
    prefix, database = keyed_fleet.prefix, keyed_fleet.database
    replicas = await keyed_fleet.start(2)
    connector = aiohttp.TCPConnector(limit=200, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        key = await new_key(session, replicas[0])
        statuses = await asyncio.gather(
            *(
                post(session, f"{replicas[i % 2].url}/v1/chat/completions", key["key"], ASK)
                for i in range(200)
            )
        )
    assert set(statuses) <= {200, 429}, statuses
    served = statuses.count(200)
    print(f"served {served} of 200 with a $0.01 budget at $0.001 a request")
    assert 0 < served <= 10
    await keyed_fleet.settled(served)
    count, total = await keyed_fleet.spend_total()
    assert (count, total) == (served, served * COST)
    assert total <= CENT
    assert await history_cost(database) == total
    spent = await rclient.hget(f"{prefix}:{{{key['id']}}}:budget:total:v1", "spent")
    assert int(spent or 0) == total


async def test_clients_that_disconnect_at_random_leave_no_reservation_behind(
    keyed_fleet: KeyedFleet, rclient: aioredis.Redis
) -> None:
    prefix = keyed_fleet.prefix
    replicas = await keyed_fleet.start(2, "tokens=10,token_delay=0.02")
    rng = random.Random(19)
    budget_key = ""

    async def one(session: aiohttp.ClientSession, replica: Replica, secret: str) -> None:
        with_stream = {**ASK, "stream": True}
        task = asyncio.create_task(
            post(session, f"{replica.url}/v1/chat/completions", secret, with_stream)
        )
        await asyncio.sleep(rng.uniform(0, 0.25))  # mid-stream, before it, or after it
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    connector = aiohttp.TCPConnector(limit=100, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        key = await new_key(session, replicas[0], budget_usd=1.0)
        budget_key = f"{prefix}:{{{key['id']}}}:budget:total:v1"
        await asyncio.gather(*(one(session, replicas[i % 2], key["key"]) for i in range(100)))

        holds = f"{prefix}:{{{key['id']}}}:holds:total:v1"

        async def released() -> bool:
            held = int(await rclient.hget(budget_key, "held") or 0)
            return held == 0 and await rclient.zcard(holds) == 0

        await wait_until(released, timeout=10)
        spent = int(await rclient.hget(budget_key, "spent") or 0)
        # The budget is whole again but for what was really spent: a request of its own fits.
        assert await post(session, f"{replicas[1].url}/chat", key["key"], ASK) == 200
        await wait_until(released, timeout=10)  # its own hold, settled after it answered
    assert spent <= 100 * COST


async def test_postgres_away_mid_traffic_spend_is_written_when_it_returns(
    keyed_fleet: KeyedFleet, pg_proxy: PgProxy
) -> None:
    replicas = await keyed_fleet.start(2, database=pg_proxy.url(keyed_fleet.database))
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, replicas[0], budget_usd=10.0)
        statuses = [await post(session, f"{r.url}/chat", key["key"], ASK) for r in replicas * 5]
        pg_proxy.disconnect()
        statuses += [await post(session, f"{r.url}/chat", key["key"], ASK) for r in replicas * 5]
        pg_proxy.restore()
    served = statuses.count(200)
    assert served == 20  # known keys keep working, budgets in Redis keep counting
    await keyed_fleet.settled(served)
    assert await keyed_fleet.spend_total() == (served, served * COST)


def rejections(text: str) -> float:
    found = re.search(r'^modelrouter_key_rejections_total\{reason="budget"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_openai_sdk_gets_insufficient_quota_and_does_not_retry(
    keyed_fleet: KeyedFleet,
) -> None:
    (replica,) = await keyed_fleet.start(1)
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, replica, budget_usd=0.001)  # less than one reservation
        sdk = openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key=key["key"], max_retries=3)
        with pytest.raises(openai.RateLimitError) as raised:
            await sdk.chat.completions.create(model="auto", messages=ASK["messages"], max_tokens=10)  # type: ignore[arg-type]
        await sdk.close()
        assert raised.value.code == "insufficient_quota"
        async with session.get(f"{replica.url}/metrics") as response:
            assert rejections(await response.text()) == 1  # one call: no retry


async def test_redis_restarted_empty_reloads_the_period_from_postgres(
    keyed_fleet: KeyedFleet, rclient: aioredis.Redis
) -> None:
    prefix = keyed_fleet.prefix
    (replica,) = await keyed_fleet.start(1)
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, replica, budget_period="week")
        for _ in range(3):
            assert await post(session, f"{replica.url}/chat", key["key"], ASK) == 200
        await keyed_fleet.settled(3)
        # Redis loses everything of this key (a restart without persistence).
        await rclient.delete(*[k async for k in rclient.scan_iter(f"{prefix}:{{{key['id']}}}:*")])
        headers = {"Authorization": f"Bearer {key['key']}"}
        async with session.post(f"{replica.url}/chat", json=ASK, headers=headers) as response:
            assert response.status == 200
            # $0.01 less the 3 recorded in PostgreSQL, less this one.
            assert response.headers["x-modelrouter-budget-remaining-usd"] == "0.006"
