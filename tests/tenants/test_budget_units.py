"""A budget's periods in UTC and a request's worst case: the bound a reservation holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from modelrouter.config import Price, TenantSettings
from modelrouter.schemas import ChatRequest, EmbedChat, EmbedInput
from modelrouter.state.ledger import MemoryLedger
from modelrouter.tenants.budget import (
    TOTAL,
    nanos_for,
    output_bound,
    output_that_fits,
    token_bound,
    top_rate,
    window,
)
from modelrouter.tenants.cost import Pricing
from modelrouter.tenants.gate import BudgetGate, OverBudget, SpendUnknown, Unpriced
from modelrouter.tenants.keys import Key
from modelrouter.tenants.prices import PriceTable, Rates
from tests.tenants.support import make_key


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("period", "now", "name", "start", "reset"),
    [
        ("day", "2026-12-06T23:59:59+00:00", "d20261206", "2026-12-06", "2026-12-07"),
        # 01:00 in UTC+02:00 is still the day before in UTC.
        ("day", "2026-12-07T01:00:00+02:00", "d20261206", "2026-12-06", "2026-12-07"),
        ("week", "2026-12-06T12:00:00+00:00", "w20261130", "2026-11-30", "2026-12-07"),  # a Sunday
        ("week", "2026-12-07T00:00:00+00:00", "w20261207", "2026-12-07", "2026-12-14"),  # Monday
        ("month", "2026-12-31T23:00:00+00:00", "m202612", "2026-12-01", "2027-01-01"),
        ("month", "2027-02-10T00:00:00+00:00", "m202702", "2027-02-01", "2027-03-01"),
    ],
)
def test_periods_start_and_reset_in_utc(
    period: str, now: str, name: str, start: str, reset: str
) -> None:
    found = window(period, at(now))  # type: ignore[arg-type]
    assert found.name == name
    assert found.start == at(f"{start}T00:00:00+00:00")
    assert found.reset_at == at(f"{reset}T00:00:00+00:00")


def test_a_total_budget_never_resets() -> None:
    assert window("total", datetime.now(timezone(timedelta(hours=5)))) is TOTAL
    assert TOTAL.reset_at is None


def chat(**fields: object) -> ChatRequest:
    return msgspec.convert(
        {"messages": [{"role": "user", "content": "héllo"}], **fields}, ChatRequest
    )


def test_the_prompt_is_bounded_by_its_utf8_bytes_plus_8_a_message() -> None:
    assert token_bound(chat()) == len("héllo".encode()) + 8 == 14
    two = chat(messages=[{"role": "system", "content": "ab"}, {"role": "user", "content": "c"}])
    assert token_bound(two) == 2 + 8 + 1 + 8


def test_the_worst_case_is_every_token_at_the_top_rate_rounded_up() -> None:
    assert output_bound(chat(max_tokens=10), 16_384) == 10
    assert output_bound(chat(), 16_384) == 16_384
    rate = top_rate([Rates(1, 2, 3, 100_000_000_000), Rates(5, 5, 5, 7)])
    assert rate == 100_000_000_000  # $100 per million tokens, in nano-dollars
    # (14 + 10) tokens at $100/M = $0.0024
    assert nanos_for(token_bound(chat(max_tokens=10), 1), rate) == 2_400_000
    assert nanos_for(token_bound(chat(max_tokens=1), 1), 1) == 1  # rounded up


def test_the_output_that_fits_is_what_is_left_less_the_prompt() -> None:
    rate = 100_000_000_000  # $100 per million tokens
    ask = chat()  # 14 prompt tokens at most
    assert output_that_fits(ask, rate, 2_400_000) == 10  # $0.0024: 24 tokens
    assert nanos_for(token_bound(chat(max_tokens=10), 1), rate) == 2_400_000, "it fits exactly"
    assert output_that_fits(ask, rate, 1_000_000) == 0, "not even the prompt"
    assert output_that_fits(ask, 0, 1_000_000) is None, "no rate: nothing to say"
    embed = EmbedChat(messages=ask.messages, embed=EmbedInput(texts=["hi"]))
    assert output_that_fits(embed, rate, 2_400_000) is None, "an embedding reserves no output"


def key(**fields: object) -> Key:
    """A key of $0.005 in total."""
    return make_key(**({"id": "key_1", "budget_nanos": 5_000_000, "secret_hash": "h"} | fields))


class BrokenSpend:
    """A spend log whose database does not answer."""

    async def spent(self, key_id: str, since: datetime | None) -> int:
        raise OSError("connection refused")


def gate(
    *, fail_closed: bool = False, unpriced_ok: bool = False, spend: object = None
) -> BudgetGate:
    table = PriceTable({"groq/*": Price(input=0.0, output=100.0)}, date="test")
    settings = TenantSettings(budget_fail_closed=fail_closed, budget_allow_unpriced=unpriced_ok)

    def chain(request: ChatRequest, allow: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        return (("groq", "m"),) if request.model != "openrouter/x" else (("openrouter", "x"),)

    return BudgetGate(
        MemoryLedger(),
        Pricing(table),
        chain=chain,
        settings=settings,
        spend=spend,
        ttl=60,  # type: ignore[arg-type]
    )


async def test_the_gate_holds_then_refuses_and_settles_to_the_real_cost() -> None:
    budgets = gate()
    ask = chat(max_tokens=10)  # reserves 24 tokens at $100/M = $0.0024
    first = await budgets.reserve(key(), ask)
    second = await budgets.reserve(key(), ask)
    assert (first.remaining, second.remaining) == (2_600_000, 200_000)
    with pytest.raises(OverBudget) as refused:
        await budgets.reserve(key(), ask)
    assert refused.value.remaining == 200_000
    budgets.settle(first, 1_000_000)
    budgets.settle(second, 1_000_000)
    assert (await budgets.period_spend("key_1", "total"))[1] == 2_000_000


async def test_an_unpriced_candidate_is_refused_unless_allowed() -> None:
    with pytest.raises(Unpriced):
        await gate().reserve(key(), chat(model="openrouter/x", max_tokens=10))
    held = await gate(unpriced_ok=True).reserve(key(), chat(model="openrouter/x", max_tokens=10))
    assert held.hold.amount == 0


async def test_spend_that_cannot_be_read_admits_or_refuses_as_configured() -> None:
    with pytest.raises(SpendUnknown):
        await gate(fail_closed=True, spend=BrokenSpend()).reserve(key(), chat(max_tokens=1))
    admitted = await gate(spend=BrokenSpend()).reserve(key(), chat(max_tokens=1))
    assert admitted.hold.amount > 0
