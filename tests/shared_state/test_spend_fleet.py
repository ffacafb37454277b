"""Spend survives gateway processes that die while PostgreSQL is away (issue 19 item 7): a
gateway killed (SIGKILL) after its failed write has its rows in Redis, and a new gateway
writes them once the database answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import Mock, wait_until
from tests.shared_state.conftest import Fleet
from tests.shared_state.test_budget_fleet import (
    ASK,
    COST,
    env,
    new_key,
    post,
    settled,
    spend_total,
)
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared
from tests.tenants.pgproxy import PgProxy

pytestmark = pytest.mark.redis


@pytest.fixture
async def pg_proxy() -> AsyncIterator[PgProxy]:
    proxy = await PgProxy().start()
    yield proxy
    await proxy.close()


async def test_a_gateway_killed_while_postgres_is_away_loses_no_spend(
    fleet: Fleet,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    database: str,
    tmp_path: Path,
    pg_proxy: PgProxy,
) -> None:
    config = env(mock, redis_url, prefix, pg_proxy.url(database), tmp_path / "p.json", "tokens=10")
    (killed,) = await fleet(config, 1)
    spool = f"{prefix}:{{spend}}:spool:v1"
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, killed, budget_usd=10.0)
        assert await post(session, f"{killed.url}/chat", key["key"], ASK) == 200
        await settled(database, 1)
        pg_proxy.disconnect()
        statuses = [await post(session, f"{killed.url}/chat", key["key"], ASK) for _ in range(10)]
        assert statuses == [200] * 10

        async def spilled() -> bool:
            return int(await rclient.llen(spool)) == 10

        await wait_until(spilled, timeout=15)  # its write failed: the rows went to Redis
        killed.sigkill()
        assert await spend_total(database) == (1, COST)

        pg_proxy.restore()
        (after,) = await fleet(config, 1)  # a new gateway, the database back
        await settled(database, 11)

        async def drained() -> bool:
            return int(await rclient.llen(spool)) == 0

        await wait_until(drained, timeout=10)
        assert await spend_total(database) == (11, 11 * COST)
        assert await post(session, f"{after.url}/chat", key["key"], ASK) == 200
    await settled(database, 12)
    assert await spend_total(database) == (12, 12 * COST)
    after.stop()  # while its database is still there: else its stop spills to the spool
