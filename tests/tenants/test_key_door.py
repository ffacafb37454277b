"""A virtual key's door on the request path (`web.keylimits.admit_key`): its limits, then its
budget, on one token ceiling computed with BUDGET_RESERVE_TOKENS; refused by the budget, the
limits' hold is given back (nothing is held by a refused request)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from modelrouter.config import Price, TenantSettings
from modelrouter.errors import ApiError
from modelrouter.schemas import ChatRequest, Message
from modelrouter.state import MemoryState
from modelrouter.state.ledger import MemoryLedger
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.cost import Pricing
from modelrouter.tenants.gate import BudgetGate
from modelrouter.tenants.limits import KeyLimits
from modelrouter.tenants.prices import PriceTable
from modelrouter.web.keylimits import admit_key
from modelrouter.web.runtime import Runtime, Summary
from tests.tenants.test_key_limits import key

PRICES = PriceTable(
    {
        "groq/*": Price(input=0.0, output=1000.0),  # $0.001 a token
        "groq/short": Price(input=0.0, output=1000.0, max_output=50),
        "groq/long": Price(input=0.0, output=1000.0, max_output=70),
    },
    date="test",
)


class Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def labels(self, reason: str) -> Any:
        return SimpleNamespace(
            inc=lambda: self.counts.update({reason: self.counts.get(reason, 0) + 1})
        )


def chain(request: ChatRequest, allow: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`model` a comma-separated list of groq's models: the request's candidates."""
    return tuple(("groq", name) for name in (request.model or "m").split(","))


def runtime(reserve_tokens: int = 16_384) -> Runtime:
    tenants = TenantSettings(budget_reserve_tokens=reserve_tokens)
    ledger = MemoryLedger()
    gate = BudgetGate(
        ledger,
        Pricing(PRICES),
        chain=chain,
        settings=tenants,
        spend=None,
        ttl=60.0,
    )
    return cast(
        Runtime,
        SimpleNamespace(
            key_limits=KeyLimits(MemoryState(), default_output=reserve_tokens, budgets=gate),
            budgets=gate,
            settings=SimpleNamespace(tenants=tenants),
            metrics=SimpleNamespace(key_rejections=Counter()),
        ),
    )


def chat(max_tokens: int | None = None, model: str | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message("user", "hello")], max_tokens=max_tokens, model=model)


async def test_without_max_tokens_tpm_and_budget_reserve_the_same_budget_reserve_tokens() -> None:
    door = runtime(reserve_tokens=100)
    await door.budgets.ledger.load("key_0123456789abcdef", "total", 0, expire_at=None)  # type: ignore[union-attr]
    limited = key(tpm=10_000, budget_nanos=10**12)
    summary = Summary(0.0)
    hold = await admit_key(door, summary, limited, chat(), stream=False)
    assert hold is not None
    tokens = token_bound(chat()) + 100  # the knob, not a second default of the tpm's own
    assert hold.reserved == tokens
    assert hold.account is not None  # the budget held by the key's meter
    assert hold.amount == tokens * 1_000_000  # $0.001 a token
    assert summary.budget_left == 10**12 - hold.amount  # the stream's header


async def test_a_request_the_budget_refuses_holds_none_of_the_keys_tpm() -> None:
    door = runtime()
    await door.budgets.ledger.load("key_0123456789abcdef", "total", 0, expire_at=None)  # type: ignore[union-attr]
    ask = chat(max_tokens=10)  # 13 + 10 tokens: $0.023
    tokens = token_bound(ask) + 10
    # A tpm that fits one request's ceiling at a time, and a budget that fits none.
    poor = key(tpm=tokens, budget_nanos=1)
    summary = Summary(0.0)
    with pytest.raises(ApiError) as refused:
        await admit_key(door, summary, poor, ask, stream=False)
    assert refused.value.status == 429
    assert refused.value.type == "insufficient_quota"
    assert summary.admission is None
    # The tpm given back: a key with the same id and tpm, and a budget, is admitted at once.
    rich = key(tpm=tokens, budget_nanos=10**12)
    hold = await admit_key(door, Summary(0.0), rich, ask, stream=False)
    assert hold is not None
    assert hold.reserved == tokens
    door.key_limits.settle(hold, None)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("model", "max_tokens", "output"),
    [
        ("short", None, 50),  # the model's published limit, not the knob's 100
        ("short,long", None, 70),  # the largest of the candidates'
        ("short,m", None, 100),  # one candidate without a limit: the knob
        ("long", 10, 10),  # max_tokens first
    ],
)
async def test_without_max_tokens_the_models_output_limit_is_reserved(
    model: str, max_tokens: int | None, output: int
) -> None:
    door = runtime(reserve_tokens=100)
    await door.budgets.ledger.load("key_0123456789abcdef", "total", 0, expire_at=None)  # type: ignore[union-attr]
    summary = Summary(0.0)
    ask = chat(max_tokens, model)
    hold = await admit_key(door, summary, key(tpm=10_000, budget_nanos=10**12), ask, stream=False)
    assert hold is not None
    tokens = token_bound(ask) + output
    assert hold.reserved == tokens
    assert hold.account is not None
    assert hold.amount == tokens * 1_000_000
    # The gate's own reservation (without the door) bounds the same tokens.
    assert door.budgets is not None
    admission = await door.budgets.reserve(key(budget_nanos=10**12), ask)
    assert admission.hold.amount == tokens * 1_000_000
