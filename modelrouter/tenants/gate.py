"""A budgeted key's admission: reserve the request's worst-case cost before the call, settle
its real cost after (see `budget.py` for the bound, `state/ledger.py` for the counters).

A period whose counters are unknown (a new process without Redis, Redis restarted empty) is
loaded from PostgreSQL's spend first. If PostgreSQL cannot say, BUDGET_FAIL_CLOSED refuses
the key (`SpendUnknown`); otherwise the request is admitted against what is counted so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import msgspec
import structlog

from modelrouter.config import TenantSettings
from modelrouter.schemas import ChatRequest
from modelrouter.state.ledger import Hold, Ledger, MemoryLedger
from modelrouter.tenants.budget import (
    Window,
    nanos_for,
    output_that_fits,
    token_bound,
    top_rate,
    window,
)
from modelrouter.tenants.cost import Pricing
from modelrouter.tenants.keys import Key, Period
from modelrouter.tenants.spend import SpendLog
from modelrouter.tenants.store import DB_ERRORS

log = structlog.get_logger("modelrouter.budget")
Chain = Callable[[ChatRequest, tuple[str, ...]], tuple[tuple[str, str], ...] | None]
MAX_MEMO: Final = 1024  # (model, provider, fallback, allow-list) whose top rate is remembered
Top = tuple[int, int | None]
_NO_PRICE: Final = -1
INF: Final = float("inf")


class OverBudget(Exception):
    """`amount`, the request's worst case, does not fit in the `remaining` nano-dollars."""

    def __init__(
        self, window: Window, remaining: int, amount: int = 0, fits: int | None = None
    ) -> None:
        super().__init__("budget exhausted")
        self.window = window
        self.remaining = remaining
        self.amount = amount
        self.fits = fits  # the largest max_tokens that would fit (`budget.output_that_fits`)


class Unpriced(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


class SpendUnknown(Exception):
    """The period's spend cannot be read, and BUDGET_FAIL_CLOSED is on."""


class Admission(msgspec.Struct, frozen=True, gc=False):
    hold: Hold
    remaining: int  # nano-dollars left after the hold
    expire_at: float | None


class BudgetGate:
    def __init__(
        self,
        ledger: Ledger,
        pricing: Pricing,
        *,
        chain: Chain,
        settings: TenantSettings,
        spend: SpendLog | None,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self._memory = ledger if type(ledger) is MemoryLedger else None  # never suspends
        self.pricing = pricing
        self.chain = chain
        self.settings = settings
        self.spend = spend
        self.ttl = ttl  # a hold's lease: past the request's deadline, a crashed replica's go
        self.clock = clock
        self._windows: dict[Period, tuple[Window, float]] = {}  # the current one, and its end
        # (model, provider, fallback, allow-list) -> (top rate, output limit)
        self.tops: dict[tuple[str | None, str | None, bool, tuple[str, ...]], Top] = {}

    def window(self, period: Period) -> Window:
        """The current period of kind `period` (computed again once it ends)."""
        return self.current(period)[0]

    def current(self, period: Period) -> tuple[Window, float]:
        """The current period and its end (epoch seconds; inf for `total`)."""
        now = self.clock()
        found = self._windows.get(period)
        if found is not None and now < found[1]:
            return found
        current = window(period, datetime.fromtimestamp(now, UTC))
        end = current.reset_at.timestamp() if current.reset_at is not None else INF
        found = self._windows[period] = (current, end)
        return found

    def ceiling(
        self, chat: ChatRequest, allow: tuple[str, ...] = (), *, budgeted: bool = True
    ) -> tuple[int, int]:
        """The request's token ceiling (its prompt bounded above, and its output: max_tokens,
        else the candidates' output limit, else BUDGET_RESERVE_TOKENS) and, `budgeted`, its
        worst-case cost at the candidates' top rate (else 0); Unpriced if a candidate has no
        price. `tenants.meter` does the same inline, on its embedded-state path."""
        rate, limit = self.top(chat, allow)
        tokens = token_bound(chat, limit or self.settings.budget_reserve_tokens)
        if not budgeted:
            return tokens, 0
        if rate == _NO_PRICE:
            raise Unpriced(chat.model or "auto")
        return tokens, nanos_for(tokens, rate)

    def top(self, chat: ChatRequest, allow: tuple[str, ...] = ()) -> tuple[int, int | None]:
        """The highest rate of the candidates `chat` may be answered by, within the key's
        allow-list (-1: a candidate is unpriced, unless BUDGET_ALLOW_UNPRICED), and the most
        output tokens any of them can write (the price table's `max_output`; None when one
        has no published limit); remembered."""
        memo = (chat.model, chat.provider, chat.fallback, allow)
        found = self.tops.get(memo)
        if found is None:
            found = self._top(chat, allow)
            if len(self.tops) < MAX_MEMO:
                self.tops[memo] = found
        return found

    def _top(self, chat: ChatRequest, allow: tuple[str, ...]) -> tuple[int, int | None]:
        candidates = self.chain(chat, allow) or ()
        pricing = self.pricing
        limits = [pricing.max_output(provider, model) for provider, model in candidates]
        known = [found for found in limits if found is not None]
        limit = max(known) if known and len(known) == len(limits) else None
        rates = [pricing.rates(provider, model) for provider, model in candidates]
        if any(r is None for r in rates) and not self.settings.budget_allow_unpriced:
            return _NO_PRICE, limit
        return top_rate(r for r in rates if r is not None), limit

    async def reserve(self, key: Key, chat: ChatRequest, *, amount: int | None = None) -> Admission:
        """Hold the request's worst case (`amount`, if already known) against `key`'s budget,
        or raise OverBudget."""
        budget = key.budget_nanos or 0
        current, end = self.current(key.budget_period)
        if amount is None:
            amount = self.ceiling(chat, key.models)[1]
        expire_at = None if end == INF else end
        ledger, ttl = self.ledger, self.ttl
        if self._memory is not None:  # no coroutine for what never suspends
            outcome = self._memory.take(key.id, current.name, budget=budget, amount=amount, ttl=ttl)
        else:
            outcome = await ledger.reserve(
                key.id, current.name, budget=budget, amount=amount, ttl=ttl, expire_at=expire_at
            )
        if outcome.status == "unloaded":
            loaded = await self._load(key, current, expire_at)
            outcome = await ledger.reserve(
                key.id,
                current.name,
                budget=budget,
                amount=amount,
                ttl=ttl,
                expire_at=expire_at,
                unchecked=not loaded,
            )
        if outcome.hold is None:
            left = outcome.remaining
            fits = output_that_fits(chat, self.top(chat, key.models)[0], left)
            raise OverBudget(current, left, amount, fits)
        return Admission(outcome.hold, outcome.remaining, expire_at)

    async def _load(self, key: Key, current: Window, expire_at: float | None) -> bool:
        """Add the period's recorded spend to the counters; False when it cannot be read."""
        recorded = 0
        if self.spend is not None:
            try:
                recorded = await self.spend.spent(key.id, current.start)
            except (*DB_ERRORS, OSError) as exc:
                log.warning("budget_spend_unknown", key_id=key.id, error=type(exc).__name__)
                if self.settings.budget_fail_closed:
                    raise SpendUnknown from None
                return False
        await self.ledger.load(key.id, current.name, recorded, expire_at=expire_at)
        return True

    def settle(self, admission: Admission, nanos: int) -> None:
        """Replace the hold by the request's real cost (never suspends)."""
        self.ledger.settle(admission.hold, nanos, expire_at=admission.expire_at)

    async def period_spend(self, key_id: str, period: Period) -> tuple[Window, int]:
        """What `key_id` has spent (settled) in its current `period`, as the ledger counts it
        (PostgreSQL's figure when the ledger has not loaded the period yet)."""
        current = self.window(period)
        balance = await self.ledger.balance(key_id, current.name)
        if balance.loaded or self.spend is None:
            return current, balance.spent
        return current, await self.spend.spent(key_id, current.start)
