"""The console's overview on the shared state: deployment health and rate budgets are the
fleet's (Redis holds them), and so are the charts, the cache's counts and the last errors (each
replica publishes its own, a read merges every live replica's); Redis away, they are this
replica's again, and the JSON says which."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from modelrouter.observability import recent_fleet
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.console import RECENT_FLEET, ErrorList, Overview
from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers
from tests.shared_state.support import RedisServer
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

AS_CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


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
    answer = await client.post("/chat", json=USER, headers=AS_CLIENT)
    assert answer.status == 200
    response = await client.get("/admin/overview", headers=AS_ADMIN)
    assert response.status == 200
    overview: dict[str, Any] = await response.json()
    assert overview["state_backend"] == "redis"
    scope = overview["scope"]
    assert (scope["health"], scope["rate_budget"]) == ("fleet", "fleet")
    assert (scope["charts"], scope["cache"], scope["errors"]) == ("fleet",) * 3
    assert scope["in_flight"] == "replica"
    groq = overview["deployments"][0]
    assert groq["name"] == "groq"
    assert groq["rate_limit"] == 100
    assert 0 < groq["rate_budget_used"] <= 0.05  # one request of a 100-a-minute budget


async def replica(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, name: str, **env: str
) -> TestClient[Any, Any]:
    """A gateway that publishes as `name`: two apps in one process would share host:pid."""
    monkeypatch.setattr(recent_fleet, "replica_id", lambda: name)
    return await gateway(API_KEY=CLIENT_KEY, ADMIN_API_KEY=ADMIN_KEY, **env)


async def overview_of(client: TestClient[Any, Any]) -> Overview:
    response = await client.get("/admin/overview", headers=AS_ADMIN)
    assert response.status == 200
    return msgspec.json.decode(await response.read(), type=Overview)


async def errors_of(client: TestClient[Any, Any]) -> ErrorList:
    response = await client.get("/admin/errors", headers=AS_ADMIN)
    assert response.status == 200
    return msgspec.json.decode(await response.read(), type=ErrorList)


async def published(client: TestClient[Any, Any]) -> None:
    """What the replica has answered, recorded and published now (not at its next turn)."""
    client.app[ACCOUNTING].drain()
    await client.app[RECENT_FLEET].publish()


async def test_one_replicas_overview_sums_the_others_attempts_errors_and_cache(
    gateway: Gateway,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = two_providers(
        mock, groq="status=503", REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix, CACHE_MODE="all"
    )
    a = await replica(gateway, monkeypatch, "replica-a", **env)
    b = await replica(gateway, monkeypatch, "replica-b", **env)
    # On b: groq fails (503), openrouter answers; the same request again; one refused.
    caches = []
    for _ in range(2):
        answer = await b.post("/chat", json=USER, headers=AS_CLIENT)
        assert answer.status == 200
        caches.append(answer.headers["x-modelrouter-cache"])
    refused = await b.post("/chat", json={"messages": []}, headers=AS_CLIENT)
    assert refused.status == 400
    await published(b)

    before = await overview_of(a)
    assert (before.scope.charts, before.scope.cache, before.scope.errors) == ("fleet",) * 3
    groq, openrouter = before.deployments
    assert (groq.last_5m.attempts, groq.last_5m.errors) == (1, 1), "b's attempts, seen from a"
    assert (groq.last_60m.attempts, groq.last_60m.errors) == (1, 1)
    assert groq.last_5m.points[-1].error_rate == 1.0
    assert openrouter.last_5m.attempts == caches.count("miss")
    assert openrouter.last_5m.ttfb_p50_ms is not None, "b's time to first byte"
    assert (before.cache.hits, before.cache.misses) == (caches.count("hit"), caches.count("miss"))

    errors = await errors_of(a)
    assert errors.scope == "fleet"
    assert [e.request_id for e in errors.data] == [refused.headers["X-Request-ID"]]

    # a's own figures add to b's: a's read is a's now plus b's as published.
    own = await a.post("/chat", json={"messages": []}, headers=AS_CLIENT)
    assert own.status == 400
    answer = await a.post("/chat", json={**USER, "user": "a"}, headers=AS_CLIENT)
    assert answer.status == 200
    a.app[ACCOUNTING].drain()
    after = await overview_of(a)
    assert after.deployments[1].last_60m.attempts == openrouter.last_60m.attempts + (
        answer.headers["x-modelrouter-cache"] == "miss"
    )
    both = await errors_of(a)
    assert [e.request_id for e in both.data] == [
        own.headers["X-Request-ID"],
        refused.headers["X-Request-ID"],
    ], "merged newest first"
    assert set(await rclient.hkeys(f"{prefix}:{{console}}:charts:v1")) >= {"replica-b"}
    assert await rclient.pttl(f"{prefix}:{{console}}:charts:v1") > 0, "expires by itself"


async def test_a_silent_replicas_figures_are_ignored_and_deleted(
    gateway: Gateway,
    mock: Mock,
    redis_url: str,
    prefix: str,
    rclient: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = two_providers(mock, REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
    a = await replica(gateway, monkeypatch, "replica-a", **env)
    key = f"{prefix}:{{console}}:charts:v1"
    old = recent_fleet.Charts(0.0, 7, 7, {"groq": ([], [])})  # published in 1970
    await rclient.hset(key, "dead", msgspec.json.encode(old))
    await rclient.hset(key, "garbled", "[1, 2")
    overview = await overview_of(a)
    assert overview.scope.charts == "fleet"
    assert (overview.cache.hits, overview.cache.misses) == (0, 0), "not counted"
    assert not {"dead", "garbled"} & set(await rclient.hkeys(key)), "and deleted"


async def test_redis_away_each_replica_shows_its_own_and_says_so(
    gateway: Gateway, mock: Mock, own_redis: RedisServer, prefix: str
) -> None:
    env = two_providers(mock, REDIS_URL=own_redis.url, REDIS_KEY_PREFIX=prefix)
    client = await gateway(API_KEY=CLIENT_KEY, ADMIN_API_KEY=ADMIN_KEY, **env)
    refused = await client.post("/chat", json={"messages": []}, headers=AS_CLIENT)
    assert refused.status == 400
    assert (await overview_of(client)).scope.charts == "fleet"
    with capture_logs() as logs:
        own_redis.kill()
        for _ in range(2):
            overview = await overview_of(client)
            assert (overview.scope.charts, overview.scope.errors) == ("replica", "replica")
            errors = await errors_of(client)
            assert errors.scope == "replica"
            assert [e.request_id for e in errors.data] == [refused.headers["X-Request-ID"]]
        own_redis.start()
        assert (await overview_of(client)).scope.charts == "fleet", "back once Redis answers"
    said = [e["event"] for e in logs if e["event"].startswith("console_figures")]
    assert said == ["console_figures_local", "console_figures_fleet"], "once per outage"
