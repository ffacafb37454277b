"""Budgets across two gateway processes sharing the real Redis and PostgreSQL (issue 19's "done
when"): 200 concurrent requests never spend past the budget, clients that disconnect leave no
reservation behind, spend survives PostgreSQL going away mid-traffic, and the `openai` SDK
gets `insufficient_quota` without retrying."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import GROQ_KEY, OPENROUTER_KEY, Mock, wait_until
from tests.history.conftest import rows
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import Replica, gateway_env
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared
from tests.tenants.pgproxy import PgProxy
from tests.tenants.test_budgets import PRICES

pytestmark = pytest.mark.redis
ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
CENT = 10_000_000  # $0.01 in nano-dollars
COST = 1_000_000  # each request's cost: 10 tokens at $100 per million


@pytest.fixture
async def pg_proxy() -> AsyncIterator[PgProxy]:
    proxy = await PgProxy().start()
    yield proxy
    await proxy.close()


def env(
    mock: Mock, redis_url: str, prefix: str, database: str, prices: Path, spec: str
) -> dict[str, str]:
    prices.write_text(json.dumps(PRICES))
    return gateway_env(
        PROVIDER_ORDER="groq,openrouter",
        GROQ_API_KEY=GROQ_KEY,
        GROQ_BASE_URL=mock.base(spec),
        GROQ_MODEL="mock-a",
        GROQ_RATE_LIMIT="0",
        OPENROUTER_API_KEY=OPENROUTER_KEY,
        OPENROUTER_BASE_URL=mock.base(spec),
        OPENROUTER_MODEL="mock-b",
        OPENROUTER_RATE_LIMIT="0",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        DATABASE_URL=database,
        ADMIN_API_KEY=ADMIN_KEY,
        PRICES_FILE=str(prices),
        HISTORY_FLUSH_SECONDS="0.05",
        MAX_CONCURRENT_STREAMS="1000",
    )


async def new_key(
    session: aiohttp.ClientSession, replica: Replica, **settings: Any
) -> dict[str, Any]:
    body = {"name": "fleet", "budget_usd": 0.01, **settings}
    async with session.post(f"{replica.url}/admin/keys", json=body, headers=AS_ADMIN) as response:
        assert response.status == 201, await response.text()
        created: dict[str, Any] = await response.json()
        return created


async def post(session: aiohttp.ClientSession, url: str, secret: str, body: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    async with session.post(url, json=body, headers=headers) as response:
        await response.read()
        return response.status


async def spend_total(database: str) -> tuple[int, int]:
    try:
        found = await rows(
            database,
            "SELECT count(*) AS n, coalesce(sum(cost_nanos), 0) AS s FROM modelrouter_spend",
        )
    except asyncpg.UndefinedTableError:
        return 0, 0
    return int(found[0]["n"]), int(found[0]["s"])


async def history_cost(database: str) -> int:
    found = await rows(
        database, "SELECT coalesce(sum(cost_nanos), 0) AS s FROM modelrouter_requests"
    )
    return int(found[0]["s"])


async def settled(database: str, served: int) -> None:
    async def written() -> bool:
        return (await spend_total(database))[0] >= served

    await wait_until(written, timeout=15)


async def test_200_concurrent_requests_over_two_replicas_never_pass_the_budget(
    fleet: Fleet,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    database: str,
    tmp_path: Path,
) -> None:
    replicas = await fleet(
        env(mock, redis_url, prefix, database, tmp_path / "p.json", "tokens=10"), 2
    )
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
    await settled(database, served)
    count, total = await spend_total(database)
    assert (count, total) == (served, served * COST)
    assert total <= CENT
    assert await history_cost(database) == total
    spent = await rclient.hget(f"{prefix}:{{{key['id']}}}:budget:total:v1", "spent")
    assert int(spent or 0) == total


async def test_clients_that_disconnect_at_random_leave_no_reservation_behind(
    fleet: Fleet,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    database: str,
    tmp_path: Path,
) -> None:
    spec = "tokens=10,token_delay=0.02"
    replicas = await fleet(env(mock, redis_url, prefix, database, tmp_path / "p.json", spec), 2)
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

        async def released() -> bool:
            return int(await rclient.hget(budget_key, "held") or 0) == 0

        await wait_until(released, timeout=10)
        spent = int(await rclient.hget(budget_key, "spent") or 0)
        # The budget is whole again but for what was really spent: a request of its own fits.
        assert await post(session, f"{replicas[1].url}/chat", key["key"], ASK) == 200
    assert await rclient.zcard(f"{prefix}:{{{key['id']}}}:holds:total:v1") == 0
    assert spent <= 100 * COST


async def test_postgres_away_mid_traffic_spend_is_written_when_it_returns(
    fleet: Fleet,
    mock: Mock,
    redis_url: str,
    prefix: str,
    database: str,
    tmp_path: Path,
    pg_proxy: PgProxy,
) -> None:
    through = pg_proxy.url(database)
    replicas = await fleet(
        env(mock, redis_url, prefix, through, tmp_path / "p.json", "tokens=10"), 2
    )
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, replicas[0], budget_usd=10.0)
        statuses = [await post(session, f"{r.url}/chat", key["key"], ASK) for r in replicas * 5]
        pg_proxy.disconnect()
        statuses += [await post(session, f"{r.url}/chat", key["key"], ASK) for r in replicas * 5]
        pg_proxy.restore()
    served = statuses.count(200)
    assert served == 20  # known keys keep working, budgets in Redis keep counting
    await settled(database, served)
    assert await spend_total(database) == (served, served * COST)


def rejections(text: str) -> float:
    found = re.search(r'^modelrouter_key_rejections_total\{reason="budget"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_openai_sdk_gets_insufficient_quota_and_does_not_retry(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, database: str, tmp_path: Path
) -> None:
    (replica,) = await fleet(
        env(mock, redis_url, prefix, database, tmp_path / "p.json", "tokens=10"), 1
    )
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
    fleet: Fleet,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    database: str,
    tmp_path: Path,
) -> None:
    (replica,) = await fleet(
        env(mock, redis_url, prefix, database, tmp_path / "p.json", "tokens=10"), 1
    )
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, replica, budget_period="week")
        for _ in range(3):
            assert await post(session, f"{replica.url}/chat", key["key"], ASK) == 200
        await settled(database, 3)
        # Redis loses everything of this key (a restart without persistence).
        await rclient.delete(*[k async for k in rclient.scan_iter(f"{prefix}:{{{key['id']}}}:*")])
        headers = {"Authorization": f"Bearer {key['key']}"}
        async with session.post(f"{replica.url}/chat", json=ASK, headers=headers) as response:
            assert response.status == 200
            # $0.01 less the 3 recorded in PostgreSQL, less this one.
            assert response.headers["x-modelrouter-budget-remaining-usd"] == "0.006"
