"""The hedge delay is learnt by the fleet: each replica's first-byte samples go to one window
per deployment in Redis, and every replica's p95 is read from it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modelrouter.config import HedgeSettings, RedisSettings
from modelrouter.observability import Metrics
from modelrouter.routing.hedging import KEEP, WINDOW_TTL, Hedging
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState

pytestmark = pytest.mark.redis


@pytest.fixture
async def replicas(
    redis_url: str, prefix: str, rclient: aioredis.Redis
) -> AsyncIterator[list[RedisState]]:
    """Two replicas' states on this test's prefix (`rclient` deletes its keys afterwards)."""
    settings = RedisSettings(key_prefix=prefix)
    states = [
        RedisState(connect(redis_url, settings), settings=settings, metrics=Metrics())
        for _ in range(2)
    ]
    for state in states:
        await state.start()
    yield states
    for state in states:
        await state.close()


async def test_each_replica_hedges_after_the_fleets_p95(
    replicas: list[RedisState], rclient: aioredis.Redis
) -> None:
    first, second = (Hedging(HedgeSettings(mode="on"), {}) for _ in range(2))
    for _ in range(30):
        first.observe("groq", 0.1)
        second.observe("groq", 0.4)
    await first.refresh(replicas[0].share_samples)
    assert first.delay("groq") == 1.0  # 30 samples in the fleet: not trusted yet
    await second.refresh(replicas[1].share_samples)
    assert second.delay("groq") == pytest.approx(0.4)  # 60: the fleet's p95
    await first.refresh(replicas[0].share_samples)  # nothing new here, the fleet's window
    assert first.delay("groq") == pytest.approx(0.4)
    key = replicas[0].key("ttfb:groq")
    assert key.endswith(":{groq}:ttfb:v1")  # hashed with the deployment's other keys
    assert await rclient.llen(key) == 60
    assert 0 < await rclient.ttl(key) <= WINDOW_TTL


async def test_the_window_keeps_the_newest_samples(replicas: list[RedisState]) -> None:
    hedging = Hedging(HedgeSettings(mode="on"), {})
    for _ in range(KEEP):
        hedging.observe("groq", 2.0)
    await hedging.refresh(replicas[0].share_samples)
    assert hedging.delay("groq") == pytest.approx(2.0)
    for _ in range(KEEP):
        hedging.observe("groq", 0.2)
    await hedging.refresh(replicas[0].share_samples)
    assert hedging.delay("groq") == pytest.approx(0.2)  # the slow ones aged out
