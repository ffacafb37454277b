"""A virtual key's limits and budget in one process (the embedded state: REDIS_URL unset).

One `Meter` per key holds the key's rpm and tpm buckets and finds its budget's account for
the current period in the process's ledger, so a request is admitted in one call and settled
in one, with no coroutine and no task (nothing here suspends). The request path's cost of a
virtual key is mostly these calls: `make bench-instructions` measures it against a static key.

The arithmetic is the shared state's: rpm and tpm are `state.memory.gcra` buckets (a minute's
worth at once from idle; tpm reserves the request's token ceiling and settles on its usage,
taken even over the limit when the ceiling guessed low), streams are `MemoryState` leases and
the budget is `state.ledger.Account`'s reserve and settle. With Redis, `KeyLimits` and
`BudgetGate` do the same against the shared state, step by step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from modelrouter.schemas import ChatRequest
from modelrouter.state.base import Lease
from modelrouter.state.ledger import Account, MemoryLedger
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.budget import PER_MILLION, Window, output_that_fits, token_bound
from modelrouter.tenants.gate import BudgetGate, OverBudget, Top, Unpriced
from modelrouter.tenants.holds import Hold, Limited
from modelrouter.tenants.keys import Key, Period

WINDOW: Final = 60.0  # a bucket holds a minute's worth (`gcra`'s burst times its interval)
_OVER: Final = WINDOW + 1e-9  # past this a bucket is over (`gcra`'s tolerance)


_NO_PERIOD: Final = Window("", None, None)


class Meter:
    """One key's buckets (theoretical arrival times, as `gcra` keeps them) and its budget's
    account in the period under way."""

    __slots__ = (
        "account",
        "budget",
        "ceiling",
        "key",
        "meters",
        "period",
        "period_end",
        "rpm_every",
        "rpm_tat",
        "streams",
        "tpm",
        "tpm_every",
        "tpm_tat",
        "window",
    )

    def __init__(self, meters: Meters, key: Key) -> None:
        self.meters = meters
        self.streams = f"kstreams:{key.id}"  # the stream leases' key in the state
        self.rpm_tat = self.tpm_tat = 0.0
        # The budget's account in `window` (until `period_end`): none before the first.
        self.account = Account()
        self.window = _NO_PERIOD
        self.period: Period | None = None  # the key's kind of period, as last used
        self.period_end = 0.0  # when the period under way ends (epoch seconds)
        self.use(key)

    def use(self, key: Key) -> None:
        """Take `key`'s settings (the key as last read: its limits may have been edited)."""
        self.key = key
        # Seconds a unit takes in a bucket (0: no limit).
        self.rpm_every = 60.0 / key.rpm if key.rpm else 0.0
        self.tpm_every = 60.0 / key.tpm if key.tpm else 0.0
        self.tpm = key.tpm or 0
        # The budget in nano-dollars (-1: none here).
        budgeted = key.budget_nanos is not None and self.meters.gate is not None
        self.budget = key.budget_nanos or 0 if budgeted else -1
        self.ceiling = budgeted or key.tpm is not None  # the request's tokens are needed
        if key.budget_period != self.period:
            self.period = key.budget_period
            self.period_end = 0.0  # the next admission enters the period under way

    def admit(self, chat: ChatRequest, stream: bool) -> Hold:  # noqa: PLR0912, PLR0915 - one call
        """Take, in this order, a stream lease (a stream, with max_parallel_streams), a request
        of the rpm, the request's token ceiling of the tpm and its worst-case cost of the
        budget (`BudgetGate.ceiling`'s, on the same tokens); Limited, OverBudget or Unpriced
        with nothing held. A period whose spend is not loaded yet holds no budget (the Hold
        `waits`, with its `amount`): the caller reserves it with `BudgetGate.reserve`, which
        loads it.

        One call for all of it, no coroutine: the embedded state's request path."""
        key, meters = self.key, self.meters
        tokens = amount = 0
        top = None
        if self.ceiling:
            gate = meters.gate
            if gate is None:
                tokens = token_bound(chat, meters.reserve_tokens)
            else:
                # The candidates' top rate and output limit (`BudgetGate.top`, remembered).
                top = gate.tops.get((chat.model, chat.provider, chat.fallback, key.models))
                if top is None:
                    top = gate.top(chat, key.models)
                tokens = token_bound(chat, top[1] or meters.reserve_tokens)
                if self.budget >= 0:
                    if top[0] < 0:  # a candidate has no price
                        raise Unpriced(chat.model or "auto")
                    amount = -(-tokens * top[0] // PER_MILLION)  # `budget.nanos_for`
        now = meters.clock()
        lease = None
        if stream and key.max_parallel_streams is not None:
            lease = meters.state.take_lease(
                self.streams, key.max_parallel_streams, ttl=meters.lease_ttl
            )
            if lease is None:
                raise Limited("streams", 1.0, "the key's max_parallel_streams are all open")
        rpm_tat = self.rpm_tat
        every = self.rpm_every
        if every:
            tat = (rpm_tat if rpm_tat > now else now) + every
            if tat - now > _OVER:
                self._drop(lease)
                raise Limited("rate_limited", tat - WINDOW - now, "the key's rpm is used up")
            self.rpm_tat = tat
        reserved = 0
        tpm_tat = self.tpm_tat
        every = self.tpm_every
        if every:
            reserved = tokens if tokens < self.tpm else self.tpm
            tat = (tpm_tat if tpm_tat > now else now) + reserved * every
            if tat - now > _OVER:
                self.rpm_tat = rpm_tat  # not served: its request goes back
                self._drop(lease)
                raise Limited("tpm", tat - WINDOW - now, "the key's tpm is used up")
            self.tpm_tat = tat
        budget = self.budget
        if budget < 0:
            return Hold(key, reserved, lease, self)
        if meters.wall() >= self.period_end:  # a new period (`use`: or the key's changed)
            self._enter(key)
        account = self.account
        if not account.loaded:
            return Hold(key, reserved, lease, self, None, amount, None, 0, 0, True)
        if not meters.one_clock:
            now = meters.ledger.clock()
        # `Account.take`, inline: what is left after the hold, if any is.
        if now >= account.soonest:  # a hold may have expired
            account.prune(now)
        left = budget - account.spent - account.held - amount
        if left < 0:
            self.tpm_tat = tpm_tat  # nothing held by a refused request
            self._drop(lease)
            raise self._over(chat, top, amount)
        token = next(meters.tokens)
        expiry = now + meters.hold_ttl
        account.holds[token] = (amount, expiry)
        if expiry < account.soonest:  # noqa: PLR1730 - `min` is a call: on every request
            account.soonest = expiry
        account.held += amount
        return Hold(key, reserved, lease, self, None, amount, account, token, left)

    def _over(self, chat: ChatRequest, top: Top | None, amount: int) -> OverBudget:
        """The refusal of a request whose worst case `amount` the budget does not have."""
        account = self.account
        left = max(self.budget - account.spent - account.held, 0)
        fits = None if top is None else output_that_fits(chat, top[0], left)
        return OverBudget(self.window, left, amount, fits)

    def _enter(self, key: Key) -> None:
        """The budget's period under way (a new one has begun, or the key's period changed)."""
        gate = self.meters.gate
        assert gate is not None  # a budget is kept only with one
        current, end = gate.current(key.budget_period)
        self.window, self.period_end = current, end
        self.account = self.meters.ledger.account(key.id, current.name)

    def _drop(self, lease: Lease | None) -> None:
        if lease is not None:
            self.meters.state.drop(self.streams, lease.token)

    def settle(self, hold: Hold, used: int | None, nanos: int) -> int | None:
        """End `hold`: its tpm reservation becomes `used` tokens (None: none used, all given
        back), its lease is released and its budget's hold becomes the cost `nanos`. What the
        budget has left after it (None: the hold held no budget)."""
        if hold.lease is not None:
            self.meters.state.drop(self.streams, hold.lease.token)
        every = self.tpm_every
        if every:
            extra = (used or 0) - hold.reserved
            if extra:
                now = self.meters.clock()
                tat = self.tpm_tat
                tat = (tat if tat > now else now) + extra * every
                # Over the reservation: taken even over the limit, up to a full bucket.
                self.tpm_tat = tat if tat - now <= _OVER else now + WINDOW
        account = hold.account
        if account is not None:
            # `Account.settle`, inline (a period since begun: its account, held on the Hold).
            held = account.holds.pop(hold.token, None)
            if held is not None:
                account.held -= held[0]
            account.spent += nanos
            return hold.left + hold.amount - nanos  # type: ignore[operator]
        admission = hold.admission
        if admission is None:
            return None
        taken = admission.hold  # the gate's, in the same ledger
        self.meters.ledger.account(taken.account, taken.period).settle(taken.token, nanos)
        return admission.remaining + taken.amount - nanos


class Meters:
    """The keys' meters of one process: its embedded state, and its ledger with the budgets'
    gate (None: keys have no budgets here)."""

    __slots__ = (
        "by_id",
        "clock",
        "gate",
        "hold_ttl",
        "lease_ttl",
        "ledger",
        "one_clock",
        "reserve_tokens",
        "state",
        "tokens",
        "wall",
    )

    def __init__(
        self,
        state: MemoryState,
        *,
        gate: BudgetGate | None,
        lease_ttl: float,
        reserve_tokens: int,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.clock = state.clock
        self.gate = gate
        ledger = None if gate is None else gate.ledger
        assert ledger is None or isinstance(ledger, MemoryLedger)
        self.ledger: MemoryLedger = ledger or MemoryLedger()
        self.lease_ttl = lease_ttl
        self.reserve_tokens = reserve_tokens
        self.wall = wall if gate is None else gate.clock
        self.hold_ttl = 0.0 if gate is None else gate.ttl
        self.one_clock = self.ledger.clock is self.clock  # a hold's expiry on the state's
        self.tokens = self.ledger.tokens  # the holds' tokens (`next`)
        self.by_id: dict[str, Meter] = {}

    def of(self, key: Key) -> Meter:
        """`key`'s meter (its settings updated when the key was read again)."""
        meter = self.by_id.get(key.id)
        if meter is None:
            meter = self.by_id[key.id] = Meter(self, key)
        elif meter.key is not key:
            meter.use(key)
        return meter
