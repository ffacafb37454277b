"""The health channel's log lines say what is so: `redis_health_feed_restored` only once the
channel is subscribed again and the limits are on Redis, never while this replica serves from
local state (the way back resubscribes then, and says `redis_recovered`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from modelrouter.config import RedisSettings
from modelrouter.observability import Metrics
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState
from tests.conftest import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
async def state(redis_url: str, prefix: str, rclient: aioredis.Redis) -> AsyncIterator[RedisState]:
    settings = RedisSettings(key_prefix=prefix, timeout=0.25)
    made = RedisState(connect(redis_url, settings), settings=settings, metrics=Metrics())
    await made.start()
    yield made
    await made.close()


async def _check(value: bool) -> bool:
    return value


async def test_the_feed_is_not_called_restored_while_the_limits_are_still_local(
    state: RedisState, rclient: aioredis.Redis
) -> None:
    back = asyncio.Event()  # Redis counts as back (for the limits) only once the test says so
    probe = state._breaker._probe

    async def probe_when_back() -> None:
        if not back.is_set():
            raise ConnectionError("the limits' keys do not answer yet")
        await probe()

    state._breaker._probe = probe_when_back
    start = state._feed.start
    outage = asyncio.Event()

    async def start_during_an_outage() -> None:
        # The limits' own commands fail while the channel is being subscribed again.
        if not outage.is_set():
            outage.set()
            state._failed("rate", ConnectionError("Connection reset by peer"))
        await start()

    state._feed.start = start_during_an_outage  # type: ignore[method-assign]
    with capture_logs() as logs:
        pubsub = state._feed._pubsub
        assert pubsub is not None
        sockname = pubsub.connection._writer.get_extra_info("sockname")
        await rclient.client_kill(f"{sockname[0]}:{sockname[1]}")  # the channel is lost

        async def resubscribed() -> bool:
            task = state._resubscribing
            return outage.is_set() and task is not None and task.done()

        await wait_until(resubscribed)
        assert state.mode == "degraded"
        assert "redis_health_feed_restored" not in [line["event"] for line in logs]
        back.set()
        await wait_until(lambda: _check(state.mode == "redis"), timeout=10)
    events = [line["event"] for line in logs]
    assert events.index("redis_health_feed_lost") < events.index("redis_unavailable")
    assert events.index("redis_unavailable") < events.index("redis_recovered")
    assert state._feed.listening, "the way back subscribed the channel again"
