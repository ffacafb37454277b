"""The budget ledger, in memory and in a real Redis: a reservation is atomic against what is
left, a settle replaces it by the real cost, an expired hold frees its amount, a period's
counters are unknown until loaded, and Redis away means this replica's share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from modelrouter.config import RedisSettings
from modelrouter.observability import Metrics
from modelrouter.state.connect import connect
from modelrouter.state.ledger import MemoryLedger
from modelrouter.state.ledger_redis import RedisLedger, ledger_for
from modelrouter.state.memory import MemoryState
from modelrouter.state.redis import RedisState
from tests.conftest import wait_until

DAY = 2_000_000_000.0  # an epoch second far ahead: the counters' expiry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_refuses_what_the_budget_cannot_hold_and_settles_the_real_cost() -> None:
    ledger = MemoryLedger()
    assert (
        await ledger.reserve("k", "d1", budget=100, amount=60, ttl=5, expire_at=None)
    ).status == "unloaded"
    await ledger.load("k", "d1", 10)
    first = await ledger.reserve("k", "d1", budget=100, amount=60, ttl=5, expire_at=None)
    assert (first.status, first.remaining) == ("held", 30)
    refused = await ledger.reserve("k", "d1", budget=100, amount=31, ttl=5, expire_at=None)
    assert (refused.status, refused.remaining, refused.hold) == ("refused", 30, None)
    assert first.hold is not None
    ledger.settle(first.hold, 25, expire_at=None)
    balance = await ledger.balance("k", "d1")
    assert (balance.spent, balance.held, balance.loaded) == (35, 0, True)
    await ledger.load("k", "d1", 999)  # loaded once only
    assert (await ledger.balance("k", "d1")).spent == 35


async def test_memory_hold_expires_by_itself() -> None:
    clock = Clock()
    ledger = MemoryLedger(clock=clock)
    await ledger.load("k", "total", 0)
    held = await ledger.reserve("k", "total", budget=10, amount=10, ttl=5, expire_at=None)
    assert held.status == "held"
    assert (
        await ledger.reserve("k", "total", budget=10, amount=1, ttl=5, expire_at=None)
    ).status == "refused"
    clock.now += 5
    assert (
        await ledger.reserve("k", "total", budget=10, amount=10, ttl=5, expire_at=None)
    ).status == "held"
    assert ledger.holds("k", "total") == 1


def test_ledger_for_picks_the_backend() -> None:
    assert isinstance(ledger_for(MemoryState()), MemoryLedger)


@pytest.fixture
async def make_ledger(
    redis_url: str, prefix: str, rclient: aioredis.Redis
) -> AsyncIterator[Callable[..., RedisLedger]]:
    states: list[RedisState] = []

    def make(url: str = redis_url, *, replicas: int = 1) -> RedisLedger:
        # 2 s, not the default 0.25 s: a stalled CI machine must not pass for a Redis outage
        # (the ledger would rightly serve its local share, and the exact counts would differ);
        # the outage test opens the breaker itself.
        settings = RedisSettings(key_prefix=prefix, timeout=2.0, expected_replicas=replicas)
        state = RedisState(
            connect(url, settings), settings=settings, metrics=Metrics(), min_wait=0.02
        )
        states.append(state)
        ledger = ledger_for(state)
        assert isinstance(ledger, RedisLedger)
        return ledger

    yield make
    for state in states:
        await state.close()


async def test_redis_reservations_from_many_callers_never_pass_the_budget(
    make_ledger: Callable[..., RedisLedger], rclient: aioredis.Redis, prefix: str
) -> None:
    ledgers = [make_ledger(), make_ledger()]
    for ledger in ledgers:
        await ledger._state.start()
    await ledgers[0].load("key_a", "d1", 0, expire_at=DAY)
    outcomes = await asyncio.gather(
        *(
            ledgers[i % 2].reserve("key_a", "d1", budget=1000, amount=70, ttl=30, expire_at=DAY)
            for i in range(40)
        )
    )
    held = [o for o in outcomes if o.status == "held"]
    assert len(held) == 1000 // 70
    for outcome in held:
        assert outcome.hold is not None
        ledgers[0].settle(outcome.hold, 50, expire_at=DAY)

    # One connection answers in order, so the settles usually land before the balance is read;
    # not when the server did not know the settle's script yet (a fresh Redis, SCRIPT FLUSH):
    # it is loaded and run again after the commands sent behind it.
    async def holds_none() -> bool:
        return (await ledgers[0].balance("key_a", "d1")).held == 0

    await wait_until(holds_none)
    balance = await ledgers[0].balance("key_a", "d1")
    assert (balance.spent, balance.held) == (50 * len(held), 0)
    budget_key = f"{prefix}:{{key_a}}:budget:d1:v1"
    assert await rclient.hget(budget_key, "spent") == str(50 * len(held))
    assert await rclient.ttl(budget_key) > 0  # the period's counters expire after its end


async def test_redis_unknown_period_asks_for_a_load_and_an_expired_hold_frees_its_amount(
    make_ledger: Callable[..., RedisLedger],
) -> None:
    ledger = make_ledger()
    await ledger._state.start()
    assert (
        await ledger.reserve("k", "total", budget=100, amount=10, ttl=5, expire_at=None)
    ).status == "unloaded"
    unchecked = await ledger.reserve(
        "k", "total", budget=100, amount=10, ttl=0.05, expire_at=None, unchecked=True
    )
    assert unchecked.status == "held"
    await ledger.load("k", "total", 80, expire_at=None)
    assert (
        await ledger.reserve("k", "total", budget=100, amount=20, ttl=5, expire_at=None)
    ).status == "refused"
    await asyncio.sleep(0.1)  # the short hold's lease runs out on Redis' clock
    assert (
        await ledger.reserve("k", "total", budget=100, amount=20, ttl=5, expire_at=None)
    ).status == "held"


async def test_redis_away_serves_this_replicas_share_then_hands_the_spend_over(
    make_ledger: Callable[..., RedisLedger], redis_url: str, rclient: aioredis.Redis, prefix: str
) -> None:
    ledger = make_ledger(replicas=2)
    state = ledger._state
    await state.start()
    await ledger.load("k", "total", 0, expire_at=None)
    first = await ledger.reserve("k", "total", budget=1000, amount=100, ttl=30, expire_at=None)
    assert first.hold is not None
    state.failed("test", ConnectionError("Redis is away"))  # the breaker opens
    assert not state.up
    ledger.settle(first.hold, 100, expire_at=None)  # owed: Redis is away
    local = [
        await ledger.reserve("k", "total", budget=1000, amount=100, ttl=30, expire_at=None)
        for _ in range(6)
    ]
    # 900 was left when Redis last answered: this replica's share is half of it.
    assert [o.status for o in local] == ["held"] * 4 + ["refused"] * 2
    for outcome in local[:4]:
        assert outcome.hold is not None
        ledger.settle(outcome.hold, 100, expire_at=None)

    async def back() -> bool:
        return state.up

    await wait_until(back, timeout=10)
    again = await ledger.reserve("k", "total", budget=1000, amount=10, ttl=30, expire_at=None)
    assert again.status == "held"
    assert await rclient.hget(f"{prefix}:{{k}}:budget:total:v1", "spent") == "500"
