"""Spend survives gateway processes that die while PostgreSQL is away (issue 19 item 7): a
gateway killed (SIGKILL) after its failed write has its rows in Redis, and a new gateway
writes them once the database answers."""

from __future__ import annotations

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import wait_until
from tests.shared_state.keyed_fleet import ASK, COST, KeyedFleet, new_key, post
from tests.shared_state.keyed_fleet import keyed_fleet as keyed_fleet  # noqa: PLC0414 - fixture
from tests.shared_state.keyed_fleet import pg_proxy as pg_proxy  # noqa: PLC0414 - the fixture
from tests.tenants.conftest import database as database  # noqa: PLC0414 - the fixture, shared
from tests.tenants.pgproxy import PgProxy

pytestmark = pytest.mark.redis


async def test_a_gateway_killed_while_postgres_is_away_loses_no_spend(
    keyed_fleet: KeyedFleet, rclient: aioredis.Redis, pg_proxy: PgProxy
) -> None:
    prefix = keyed_fleet.prefix
    config = keyed_fleet.env(database=pg_proxy.url(keyed_fleet.database))
    (killed,) = await keyed_fleet.fleet(config, 1)
    spool = f"{prefix}:{{spend}}:spool:v1"
    async with aiohttp.ClientSession() as session:
        key = await new_key(session, killed, budget_usd=10.0)
        assert await post(session, f"{killed.url}/chat", key["key"], ASK) == 200
        await keyed_fleet.settled(1)
        pg_proxy.disconnect()
        statuses = [await post(session, f"{killed.url}/chat", key["key"], ASK) for _ in range(10)]
        assert statuses == [200] * 10

        async def spilled() -> bool:
            return int(await rclient.llen(spool)) == 10

        await wait_until(spilled, timeout=15)  # its write failed: the rows went to Redis
        killed.sigkill()
        assert await keyed_fleet.spend_total() == (1, COST)

        pg_proxy.restore()
        (after,) = await keyed_fleet.fleet(config, 1)  # a new gateway, the database back
        await keyed_fleet.settled(11)

        async def drained() -> bool:
            return int(await rclient.llen(spool)) == 0

        await wait_until(drained, timeout=10)
        assert await keyed_fleet.spend_total() == (11, 11 * COST)
        assert await post(session, f"{after.url}/chat", key["key"], ASK) == 200
    await keyed_fleet.settled(12)
    assert await keyed_fleet.spend_total() == (12, 12 * COST)
    after.stop()  # while its database is still there: else its stop spills to the spool
