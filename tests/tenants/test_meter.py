"""A key's meter (the embedded state's one-call admission): its limits and its budget share
the shared state's arithmetic and the process's ledger, and a refusal holds nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelrouter.config import Price, TenantSettings
from modelrouter.state import MemoryState
from modelrouter.state.ledger import MemoryLedger
from modelrouter.tenants.cost import Pricing
from modelrouter.tenants.gate import BudgetGate, OverBudget, Unpriced
from modelrouter.tenants.holds import Limited
from modelrouter.tenants.meter import Meters
from modelrouter.tenants.prices import PriceTable
from tests.tenants.test_key_door import chain, chat
from tests.tenants.test_key_limits import Clock, key

PRICES = PriceTable({"groq/m": Price(input=0.0, output=1000.0)}, date="test")  # $0.001 a token
DAY_ONE = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC).timestamp()


def meters(clock: Clock, wall: list[float]) -> Meters:
    gate = BudgetGate(
        MemoryLedger(clock=clock),
        Pricing(PRICES),
        chain=chain,
        settings=TenantSettings(),
        spend=None,
        ttl=60.0,
        clock=lambda: wall[0],
    )
    return Meters(MemoryState(clock=clock), gate=gate, lease_ttl=30.0, reserve_tokens=100)


async def test_a_budget_refusal_gives_back_the_tpm_and_the_stream_lease() -> None:
    clock, wall = Clock(), [DAY_ONE]
    found = meters(clock, wall)
    ask = chat(max_tokens=10)  # 13 + 10 tokens: $0.023
    poor = key(tpm=23, max_parallel_streams=1, budget_nanos=1, budget_period="day")
    meter = found.of(poor)
    await found.ledger.load(poor.id, "d20261206", 0, expire_at=None)
    with pytest.raises(OverBudget):
        meter.admit(ask, True)
    # Nothing held: the tpm (one request's worth) and the one stream are free again.
    rich = key(tpm=23, max_parallel_streams=1, budget_nanos=10**12, budget_period="day")
    hold = found.of(rich).admit(ask, True)
    assert hold.reserved == 23
    assert hold.lease is not None
    assert hold.account is not None  # the budget held in the meter's account
    assert hold.amount == 23_000_000
    with pytest.raises(Limited) as limited:
        found.of(rich).admit(ask, True)
    assert limited.value.reason == "streams"


async def test_a_hold_taken_before_midnight_settles_in_its_own_day() -> None:
    clock, wall = Clock(), [DAY_ONE]
    found = meters(clock, wall)
    budgeted = key(budget_nanos=10**12, budget_period="day")
    meter = found.of(budgeted)
    first = meter.admit(chat(max_tokens=10), False)
    assert first.waits  # the day's spend not loaded yet: the caller loads it
    assert first.account is None
    assert first.amount == 23_000_000
    await found.ledger.load(budgeted.id, "d20261206", 0, expire_at=None)
    held = meter.admit(chat(max_tokens=10), False)
    assert held.account is not None
    wall[0] += 2.0  # the next day
    await found.ledger.load(budgeted.id, "d20261207", 0, expire_at=None)
    later = meter.admit(chat(max_tokens=10), False)
    assert later.account is found.ledger.account(budgeted.id, "d20261207")
    assert meter.settle(held, 5, 5_000_000) == 10**12 - 23_000_000 + 23_000_000 - 5_000_000
    old = await found.ledger.balance(budgeted.id, "d20261206")
    new = await found.ledger.balance(budgeted.id, "d20261207")
    assert (old.spent, old.held) == (5_000_000, 0)
    assert (new.spent, new.held) == (0, 23_000_000)


async def test_an_edited_key_keeps_its_buckets_and_takes_its_new_limits() -> None:
    clock, wall = Clock(), [DAY_ONE]
    found = meters(clock, wall)
    meter = found.of(key(rpm=1))
    meter.admit(chat(), False)
    clock.now += 30.0
    with pytest.raises(Limited):
        found.of(key(rpm=1)).admit(chat(), False)  # the next in 30 s
    assert found.of(key(rpm=2)) is meter  # half a minute is a request now, and it has passed
    meter.admit(chat(), False)
    with pytest.raises(Limited):
        meter.admit(chat(), False)


async def test_an_unpriced_model_is_refused_before_anything_is_taken() -> None:
    clock, wall = Clock(), [DAY_ONE]
    found = meters(clock, wall)
    budgeted = key(rpm=1, budget_nanos=10**12)
    with pytest.raises(Unpriced):
        found.of(budgeted).admit(chat(model="other"), False)
    hold = found.of(key(rpm=1)).admit(chat(), False)  # the rpm's one request is still there
    assert hold.account is None
    assert hold.admission is None
