"""A fleet of gateway processes on the real Redis and PostgreSQL with virtual keys and a price
table (the budget and spend fleet tests): the `keyed_fleet` fixture starts them, and the helpers
create a key, send a request and read the spend written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import GROQ_KEY, OPENROUTER_KEY, Mock, wait_until
from tests.history.conftest import rows
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import Replica, gateway_env
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN
from tests.tenants.pgproxy import PgProxy
from tests.tenants.test_budgets import PRICES

ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
COST = 1_000_000  # each request's cost: 10 tokens at $100 per million


@dataclass
class KeyedFleet:
    """What a keyed fleet's gateways share: the mock behind them, the Redis prefix, the database
    and the price table's file."""

    fleet: Fleet
    mock: Mock
    redis_url: str
    prefix: str
    database: str
    prices: Path

    def env(self, spec: str = "tokens=10", *, database: str | None = None) -> dict[str, str]:
        """The gateways' environment; `database` instead of the test's own (a proxy to it)."""
        self.prices.write_text(json.dumps(PRICES))
        return gateway_env(
            PROVIDER_ORDER="groq,openrouter",
            GROQ_API_KEY=GROQ_KEY,
            GROQ_BASE_URL=self.mock.base(spec),
            GROQ_MODEL="mock-a",
            GROQ_RATE_LIMIT="0",
            OPENROUTER_API_KEY=OPENROUTER_KEY,
            OPENROUTER_BASE_URL=self.mock.base(spec),
            OPENROUTER_MODEL="mock-b",
            OPENROUTER_RATE_LIMIT="0",
            REDIS_URL=self.redis_url,
            REDIS_KEY_PREFIX=self.prefix,
            DATABASE_URL=database or self.database,
            ADMIN_API_KEY=ADMIN_KEY,
            PRICES_FILE=str(self.prices),
            HISTORY_FLUSH_SECONDS="0.05",
            MAX_CONCURRENT_STREAMS="1000",
        )

    async def start(
        self, count: int, spec: str = "tokens=10", *, database: str | None = None
    ) -> list[Replica]:
        """Start `count` gateways (stopped at the end of the test)."""
        return await self.fleet(self.env(spec, database=database), count)

    async def spend_total(self) -> tuple[int, int]:
        """How many spend rows the test's database holds, and their sum in nano-dollars."""
        try:
            found = await rows(
                self.database,
                "SELECT count(*) AS n, coalesce(sum(cost_nanos), 0) AS s FROM modelrouter_spend",
            )
        except asyncpg.UndefinedTableError:
            return 0, 0
        return int(found[0]["n"]), int(found[0]["s"])

    async def settled(self, served: int) -> None:
        """Until the spend of `served` requests is written."""

        async def written() -> bool:
            return (await self.spend_total())[0] >= served

        await wait_until(written, timeout=15)


@pytest.fixture
def keyed_fleet(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, database: str, tmp_path: Path
) -> KeyedFleet:
    """Needs `database` (tests.tenants.conftest's) imported by the test module."""
    return KeyedFleet(fleet, mock, redis_url, prefix, database, tmp_path / "p.json")


@pytest.fixture
async def pg_proxy() -> AsyncIterator[PgProxy]:
    proxy = await PgProxy().start()
    yield proxy
    await proxy.close()


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
