"""Gateways in this process on a real Redis: health pushed to the provider actors, /health."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until

pytestmark = pytest.mark.redis


async def test_a_blacklist_reaches_the_other_gateways_actor_without_a_redis_read(
    gateway: Gateway, mock: Mock, redis_url: str, prefix: str, rclient: aioredis.Redis
) -> None:
    env = two_providers(mock, groq="status=503", REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
    first, second = await gateway(**env), await gateway(**env)
    assert (await (await second.get("/health")).json())["state_backend"] == "redis"
    response = await first.post("/chat", json=USER)
    assert (await response.json())["provider"] == "openrouter"
    groq = second.app[RUNTIME].system.router.providers["groq"]

    async def heard() -> bool:
        return groq.status() == "blacklisted"

    await wait_until(heard)
    assert groq.health.last_reason == "server_error"
    body = await (await second.post("/chat", json=USER)).json()
    assert body["provider"] == "openrouter"
    assert await mock.count("status=503") == 1
    # The one that recovers tells the others too.
    await first.app[RUNTIME].system.state.save_health("groq", type(groq.health.record())())

    async def recovered() -> bool:
        return groq.status() == "ok"

    await wait_until(recovered)


async def test_health_says_degraded_while_redis_is_unreachable_and_requests_are_served(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_TIMEOUT="0.1")
    client = await gateway(**env)
    assert (await client.post("/chat", json=USER)).status == 200
    health = await (await client.get("/health")).json()
    assert (health["status"], health["state_backend"]) == ("degraded", "degraded")
    metrics = await (await client.get("/metrics")).text()
    assert 'modelrouter_state_backend{mode="degraded"} 1.0' in metrics
    assert 'modelrouter_redis_errors_total{op="connect"} 1.0' in metrics
