"""A key's limits on the real Redis (the same scripts as providers', hash-tagged per key), and
on each replica's share while Redis is away."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from modelrouter.tenants.limits import KeyLimits, Limited
from tests.shared_state.conftest import prefix, rclient, redis_url
from tests.shared_state.test_redis_state import MakeState, make_state, started
from tests.tenants.test_key_limits import chat, key

pytestmark = pytest.mark.redis
__all__ = ["make_state", "prefix", "rclient", "redis_url"]  # fixtures used here


async def test_tpm_reserves_and_settles_in_one_hash_tagged_bucket(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis, prefix: str
) -> None:
    limits = KeyLimits(await started(make_state(redis_url)))
    limited = key(tpm=100)
    request = chat("x" * 22, max_tokens=10)  # a ceiling of 40
    first = await limits.admit(limited, request, stream=False)
    await limits.admit(limited, request, stream=False)
    with pytest.raises(Limited) as over:
        await limits.admit(limited, request, stream=False)
    assert over.value.reason == "tpm"
    assert first is not None
    task = limits.settle(first, 4)
    assert task is not None
    await task
    await limits.admit(limited, request, stream=False)  # 36 came back
    assert await rclient.exists(f"{prefix}:{{{limited.id}}}:ktpm:v1")


async def test_streams_are_leases_in_redis_released_on_settle(
    make_state: MakeState, redis_url: str, rclient: aioredis.Redis, prefix: str
) -> None:
    limits = KeyLimits(await started(make_state(redis_url)))
    limited = key(max_parallel_streams=2, rpm=100)
    held = [await limits.admit(limited, chat(), stream=True) for _ in range(2)]
    assert await rclient.zcard(f"{prefix}:{{{limited.id}}}:kstreams:v1") == 2
    with pytest.raises(Limited):
        await limits.admit(limited, chat(), stream=True)
    for hold in held:
        assert hold is not None
        task = limits.settle(hold, 9)
        assert task is not None
        await task
    await limits.close()
    assert await limits.admit(limited, chat(), stream=True) is not None


async def test_with_redis_away_a_replica_keeps_its_share(make_state: MakeState) -> None:
    state = make_state("redis://127.0.0.1:1/0", replicas=2)
    await state.start()  # nothing answers: local, each replica half of each limit
    assert state.mode == "degraded"
    limits = KeyLimits(state)
    limited = key(tpm=100, rpm=4)
    await limits.admit(limited, chat("x" * 22, max_tokens=10), stream=False)  # 40 of 50
    with pytest.raises(Limited) as over:
        await limits.admit(limited, chat("x" * 22, max_tokens=10), stream=False)
    assert over.value.reason == "tpm"
    big = key(id="key_fedcba9876543210", tpm=100)  # a ceiling above the share takes it whole
    assert await limits.admit(big, chat("x" * 500), stream=False) is not None
    with pytest.raises(Limited):
        await limits.admit(big, chat(""), stream=False)
