"""Budgets as the shared state keeps them: reserve, then settle, in integer nano-dollars.

An account (a virtual key's id) has, per period, what it has `spent` and what is `held` by
requests still running. `reserve` takes `amount` from what is left of `budget` atomically, or
refuses; `settle` replaces a hold by what the request really cost (also when the hold has
expired meanwhile: the spend happened). A hold expires by itself after its TTL, so a replica
that crashed leaks nothing for long. `settle` never suspends: it is queued at once, so a
`finally` that a cancellation interrupts cannot skip it.

A period's counters start unknown (`loaded` false: a new process, or Redis restarted empty):
`reserve` then answers `UNLOADED` until `load` has added what PostgreSQL recorded for the
period (`unchecked` admits against what is counted so far instead: fail-open).

This module is the in-process ledger (`MemoryLedger`, also the Redis ledger's fallback); the
Redis one is `ledger_redis.py`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Literal, Protocol

import msgspec

Status = Literal["held", "refused", "unloaded"]


class Hold(msgspec.Struct, frozen=True, gc=False):
    """A reservation: settle it exactly once."""

    account: str
    period: str
    token: str | int  # a number in this process's ledger
    amount: int
    shared: bool = False  # held in Redis (else in this process)


class Outcome(msgspec.Struct, frozen=True, gc=False):
    status: Status
    remaining: int = 0  # budget less spent and held, after this reservation (when held)
    hold: Hold | None = None


UNLOADED = Outcome("unloaded")


class Balance(msgspec.Struct, frozen=True, gc=False):
    spent: int
    held: int
    loaded: bool


class Ledger(Protocol):
    async def reserve(
        self,
        account: str,
        period: str,
        *,
        budget: int,
        amount: int,
        ttl: float,
        expire_at: float | None,
        unchecked: bool = False,
    ) -> Outcome:
        """Hold `amount` of what `budget` has left in `period` for `ttl` seconds, or refuse.
        `expire_at` (epoch seconds): when the period's counters may be forgotten."""
        ...

    def settle(self, hold: Hold, nanos: int, *, expire_at: float | None) -> None:
        """Replace `hold` by the request's real cost `nanos` (0: released)."""
        ...

    async def load(self, account: str, period: str, nanos: int, *, expire_at: float | None) -> None:
        """Add `nanos` (the period's spend as recorded) once, if the period is not loaded."""
        ...

    async def balance(self, account: str, period: str) -> Balance: ...


class Account:
    """One account's counters in one period, in this process (`MemoryLedger.account`)."""

    __slots__ = ("held", "holds", "loaded", "soonest", "spent")

    def __init__(self) -> None:
        self.spent = 0
        self.held = 0
        self.loaded = False
        self.holds: dict[str | int, tuple[int, float]] = {}  # token -> (amount, expiry)
        self.soonest = math.inf  # no hold expires before this (a lower bound)

    def prune(self, now: float) -> None:
        """Drop the expired holds: a scan only once the soonest expiry has passed."""
        if now < self.soonest:
            return
        for token in [t for t, (_, expiry) in self.holds.items() if expiry <= now]:
            self.held -= self.holds.pop(token)[0]
        self.soonest = min((expiry for _, expiry in self.holds.values()), default=math.inf)

    def take(self, budget: int, amount: int, now: float, expiry: float, token: int) -> int | None:
        """Hold `amount` under `token` until `expiry` if `budget` has it left (the holds
        expired by `now` given back first): what is left after it; None: refused, nothing held."""
        if now >= self.soonest:  # a hold may have expired
            self.prune(now)
        left = budget - self.spent - self.held - amount
        if left < 0:
            return None
        self.holds[token] = (amount, expiry)
        if expiry < self.soonest:  # noqa: PLR1730 - `min` is a call: on every request
            self.soonest = expiry
        self.held += amount
        return left

    def settle(self, token: str | int, nanos: int) -> None:
        """The hold `token` (unless it expired) becomes the spend `nanos`."""
        held = self.holds.pop(token, None)
        if held is not None:
            self.held -= held[0]
        self.spent += nanos


class MemoryLedger:
    """Every account in this process; each call completes without suspending."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._accounts: dict[tuple[str, str], Account] = {}
        self.tokens = itertools.count(1)  # the holds' tokens: `next(ledger.tokens)`

    def account(self, account: str, period: str) -> Account:
        """The counters of `account` in `period` (created empty and not loaded)."""
        found = self._accounts.get((account, period))
        if found is None:
            found = self._accounts[account, period] = Account()
        return found

    async def reserve(
        self,
        account: str,
        period: str,
        *,
        budget: int,
        amount: int,
        ttl: float,
        expire_at: float | None,  # noqa: ARG002 - one process: nothing to expire
        unchecked: bool = False,
    ) -> Outcome:
        return self.take(
            account, period, budget=budget, amount=amount, ttl=ttl, unchecked=unchecked
        )

    def take(
        self,
        account: str,
        period: str,
        *,
        budget: int,
        amount: int,
        ttl: float,
        unchecked: bool = False,
    ) -> Outcome:
        """`reserve` without a coroutine."""
        acc = self.account(account, period)
        if not acc.loaded and not unchecked:
            return UNLOADED
        now = self.clock()
        token = next(self.tokens)
        left = acc.take(budget, amount, now, now + ttl, token)
        if left is None:
            return Outcome("refused", max(budget - acc.spent - acc.held, 0))
        return Outcome("held", left, Hold(account, period, token, amount))

    def settle(self, hold: Hold, nanos: int, *, expire_at: float | None = None) -> None:  # noqa: ARG002
        self.account(hold.account, hold.period).settle(hold.token, nanos)

    def add(self, account: str, period: str, nanos: int) -> None:
        """Spend without a hold (counted elsewhere, or a hold of another ledger)."""
        self.account(account, period).spent += nanos

    async def load(
        self,
        account: str,
        period: str,
        nanos: int,
        *,
        expire_at: float | None = None,  # noqa: ARG002
    ) -> None:
        acc = self.account(account, period)
        if not acc.loaded:
            acc.spent += nanos
            acc.loaded = True

    async def balance(self, account: str, period: str) -> Balance:
        acc = self._accounts.get((account, period))
        if acc is None:
            return Balance(0, 0, loaded=False)
        acc.prune(self.clock())
        return Balance(acc.spent, acc.held, acc.loaded)

    def forget_spend(self) -> None:
        """Drop the spend counted, keep the holds (a new outage counts from zero)."""
        for acc in self._accounts.values():
            acc.spent = 0
            acc.loaded = True

    def holds(self, account: str, period: str) -> int:
        acc = self._accounts.get((account, period))
        return 0 if acc is None else len(acc.holds)
