"""A virtual key's own limits, with the shared state's operations (the providers' own): `rpm`
(the GCRA bucket), `tpm` (the same bucket in tokens: the request's ceiling reserved at
admission, settled on its real usage at the end) and `max_parallel_streams` (leases).

State keys are hash-tagged per key (`mr:{key_...}:krpm:v1`), so each script touches one slot of
a Redis Cluster. With Redis the limits are exact across replicas; without it, in the process;
with Redis away, each replica keeps its share (REDIS_EXPECTED_REPLICAS), as providers' limits do.

A hold is always settled (`Hold.settle`, from a `finally`): a reservation's unused tokens and
the stream lease go back whether the request ended well, failed, or its client went away. With
Redis the settle runs as a task owned by `KeyLimits`, so a second cancellation cannot skip it;
with the embedded state it is done at once (nothing there suspends).
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from modelrouter.config import TenantSettings
from modelrouter.schemas import ChatRequest
from modelrouter.state.base import SharedState
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.gate import BudgetGate
from modelrouter.tenants.holds import Hold, Limited
from modelrouter.tenants.keys import Key
from modelrouter.tenants.meter import Meters

# A request without max_tokens reserves this much output: BUDGET_RESERVE_TOKENS, one knob for
# a key's tpm, a deployment's tpm and a budget (the running value comes from the settings).
DEFAULT_RESERVE_TOKENS: Final = TenantSettings().budget_reserve_tokens


class KeyLimits:
    """Admission against keys' limits, and the settles it owes (awaited at shutdown)."""

    def __init__(
        self,
        state: SharedState,
        *,
        lease_ttl: float = 30.0,
        renew_every: float = 10.0,
        default_output: int = DEFAULT_RESERVE_TOKENS,
        budgets: BudgetGate | None = None,
    ) -> None:
        self.state = state
        self.lease_ttl = lease_ttl if state.leases_expire else math.inf
        # The embedded state: a meter per key admits and settles (`tenants.meter`), its
        # budget's too (with `budgets`, the in-process ledger's gate), with no coroutine.
        self.meters = (
            Meters(state, gate=budgets, lease_ttl=self.lease_ttl, reserve_tokens=default_output)
            if isinstance(state, MemoryState)
            else None
        )
        self.renew_every = renew_every
        self.default_output = default_output
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(
        self, key: Key, chat: ChatRequest, *, stream: bool, tokens: int | None = None
    ) -> Hold | None:
        """Take the request's share of the key's limits (None: the key has none), or Limited
        with nothing held. `tokens`: the request's `budget.token_bound`, if already known.

        With the embedded state the key's meter takes it (`Meter.admit`, its own ceiling),
        and with `budgets` the key's budget too: the Hold's admission, settled by `settle`."""
        streams = key.max_parallel_streams if stream else None
        if key.rpm is None and key.tpm is None and streams is None and key.budget_nanos is None:
            return None
        if self.meters is not None:
            return self.meters.of(key).admit(chat, stream)
        if key.rpm is None and key.tpm is None and streams is None:
            return None
        if tokens is None:
            tokens = token_bound(chat, self.default_output)
        state = self.state
        lease = None
        if streams is not None:
            lease = await state.acquire_lease(f"kstreams:{key.id}", streams, ttl=self.lease_ttl)
            if lease is None:
                raise Limited("streams", 1.0, "the key's max_parallel_streams are all open")
            if state.leases_expire:
                state.keep_lease(lease, ttl=self.lease_ttl, every=self.renew_every)
        try:
            reserved = await self._rates(key, tokens)
        except BaseException:
            if lease is not None:
                await state.release_lease(lease)
            raise
        return Hold(key, reserved, lease)

    async def _rates(self, key: Key, tokens: int) -> int:
        """Take one request of the key's rpm and the request's ceiling of its tpm: the tokens
        reserved, or Limited with neither taken."""
        state = self.state
        if key.rpm is not None:
            decision = await state.acquire_rate(f"krpm:{key.id}", key.rpm)
            if not decision.allowed:
                raise Limited("rate_limited", decision.retry_after, "the key's rpm is used up")
        if key.tpm is None:
            return 0
        reserved = min(tokens, key.tpm)
        decision = await state.acquire_units(f"ktpm:{key.id}", key.tpm, reserved)
        if not decision.allowed:
            if key.rpm is not None:  # not served: its request goes back
                await state.acquire_units(f"krpm:{key.id}", key.rpm, -1)
            raise Limited("tpm", decision.retry_after, "the key's tpm is used up")
        return reserved

    def settle(self, hold: Hold, used: int | None, nanos: int = 0) -> asyncio.Task[None] | None:
        """End `hold`: the reservation becomes `used` tokens (None: nothing was used, give it
        all back) and the lease is released (a meter's budget hold: the cost `nanos`). Done
        now with the embedded state; otherwise runs on as its own task (None: nothing left
        to do)."""
        if hold.meter is not None:
            hold.meter.settle(hold, used, nanos)
            return None
        key, used = hold.key, used or 0
        if hold.lease is None and (key.tpm is None or used == hold.reserved):
            return None
        task = asyncio.get_running_loop().create_task(self._settle(hold, used))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def _settle(self, hold: Hold, used: int) -> None:
        state, key = self.state, hold.key
        if hold.lease is not None:
            await state.release_lease(hold.lease)
        if key.tpm is not None and used != hold.reserved:
            # Over the reservation (a ceiling that guessed low): taken even over the limit.
            extra = used - hold.reserved
            await state.acquire_units(f"ktpm:{key.id}", key.tpm, extra, force=extra > 0)

    async def close(self) -> None:
        """Wait for the settles still running (bounded by the state's own timeouts)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
