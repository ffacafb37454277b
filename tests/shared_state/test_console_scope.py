"""The console's overview on the shared state: deployment health and rate budgets are the
fleet's (Redis holds them), the charts and errors stay this replica's, and it says so."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN


async def test_with_redis_health_and_budgets_are_fleet_wide(
    gateway: Gateway, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    env = two_providers(mock, GROQ_RATE_LIMIT="100")
    client = await gateway(
        API_KEY=CLIENT_KEY,
        ADMIN_API_KEY=ADMIN_KEY,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        **env,
    )
    answer = await client.post(
        "/chat", json=USER, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert answer.status == 200
    response = await client.get("/admin/overview", headers=AS_ADMIN)
    assert response.status == 200
    overview: dict[str, Any] = await response.json()
    assert overview["state_backend"] == "redis"
    scope = overview["scope"]
    assert (scope["health"], scope["rate_budget"]) == ("fleet", "fleet")
    assert (scope["charts"], scope["errors"], scope["in_flight"]) == ("replica",) * 3
    groq = overview["deployments"][0]
    assert groq["name"] == "groq"
    assert groq["rate_limit"] == 100
    assert 0 < groq["rate_budget_used"] <= 0.05  # one request of a 100-a-minute budget
