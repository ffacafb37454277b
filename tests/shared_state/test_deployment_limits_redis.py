"""Deployments' tpm and stream leases on the real Redis: each deployment's bucket is its own
(hash-tagged per name) and exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modelrouter.actors.deployment_limits import DeploymentHold, DeploymentLimits
from modelrouter.actors.messages import Admission, Attempt
from modelrouter.actors.relay import Relay
from modelrouter.config import RedisSettings
from modelrouter.observability import Metrics
from modelrouter.schemas import ChatRequest, Message
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState

pytestmark = pytest.mark.redis
CHAT = ChatRequest(messages=[Message(role="user", content="x" * 9)], max_tokens=8)  # 25


@pytest.fixture
async def state(redis_url: str, prefix: str, rclient: aioredis.Redis) -> AsyncIterator[RedisState]:
    """A RedisState on this test's prefix (`rclient` deletes its keys afterwards)."""
    settings = RedisSettings(key_prefix=prefix)
    shared = RedisState(connect(redis_url, settings), settings=settings, metrics=Metrics())
    await shared.start()
    yield shared
    await shared.close()


async def test_two_deployments_tpm_are_independent_and_exact(
    state: RedisState, rclient: aioredis.Redis
) -> None:
    settling: set[asyncio.Task[None]] = set()
    d0, d1 = (
        DeploymentLimits(state, name, tpm=100, max_parallel_streams=1, settling=settling)
        for name in ("d0", "d1")
    )

    def attempt() -> Attempt:
        return Attempt(CHAT, "m", Relay(), True, deadline=1e12, request_id="r")

    held = [await d0.take(Attempt(CHAT, "m", Relay(), False, 1e12, "r")) for _ in range(4)]
    assert [h.reserved for h in held if isinstance(h, DeploymentHold)] == [25] * 4
    assert isinstance(held[0], DeploymentHold)
    fifth = await d0.take(attempt())
    assert isinstance(fifth, Admission)
    assert fifth.rejection == "rate_limited"
    sibling = await d1.take(attempt())
    assert isinstance(sibling, DeploymentHold), "d1's bucket is its own"
    assert sibling.lease is not None
    assert await rclient.exists(state.key("tpm:d0"), state.key("tpm:d1")) == 2
    # The refused fifth released the stream lease it took: d0's one slot is free.
    lease = await state.acquire_lease("streams:d0", 1, ttl=30.0)
    assert lease is not None
    await state.release_lease(lease)
    # A cancelled attempt gives its 25 back: exactly one more fits.
    d0.settle(held[0], None)
    await asyncio.gather(*settling)
    assert isinstance(await d0.take(attempt()), DeploymentHold)
