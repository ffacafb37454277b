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
from modelrouter.state.base import Lease, SharedState
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.budget import output_bound, prompt_bound
from modelrouter.tenants.keys import Key

# A request without max_tokens reserves this much output: BUDGET_RESERVE_TOKENS, one knob for
# a key's tpm, a deployment's tpm and a budget (the running value comes from the settings).
DEFAULT_RESERVE_TOKENS: Final = TenantSettings().budget_reserve_tokens


class Limited(Exception):
    """Over one of the key's limits: a 429 with Retry-After."""

    def __init__(self, reason: str, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # rate_limited, tpm or streams (the rejection metric's label)
        self.retry_after = retry_after
        self.message = message


def token_ceiling(chat: ChatRequest, *, default_output: int = DEFAULT_RESERVE_TOKENS) -> int:
    """The most tokens the request can use: its prompt bounded above (`budget.prompt_bound`:
    UTF-8 bytes, a few a message, tools as JSON) plus its output (`budget.output_bound`:
    max_tokens or `default_output`; none for embeddings and token counts). A budget prices
    these same tokens: a request computes them once for both."""
    return prompt_bound(chat) + output_bound(chat, default_output)


class Hold:
    """What one request holds against its key: tokens reserved, and a stream lease."""

    __slots__ = ("key", "lease", "reserved")

    def __init__(self, key: Key, reserved: int, lease: Lease | None) -> None:
        self.key = key
        self.reserved = reserved
        self.lease = lease


class KeyLimits:
    """Admission against keys' limits, and the settles it owes (awaited at shutdown)."""

    def __init__(
        self,
        state: SharedState,
        *,
        lease_ttl: float = 30.0,
        renew_every: float = 10.0,
        default_output: int = DEFAULT_RESERVE_TOKENS,
    ) -> None:
        self.state = state
        self.lease_ttl = lease_ttl if state.leases_expire else math.inf
        # The embedded state: its operations never suspend, so admission and settle call
        # them directly (`admit_now`), with no coroutine or task per request.
        self.memory = state if isinstance(state, MemoryState) else None
        self.renew_every = renew_every
        self.default_output = default_output
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(
        self, key: Key, chat: ChatRequest, *, stream: bool, tokens: int | None = None
    ) -> Hold | None:
        """Take the request's share of the key's limits (None: the key has none), or Limited
        with nothing held. `tokens`: the request's `token_ceiling`, if already known."""
        if tokens is None:
            tokens = token_ceiling(chat, default_output=self.default_output)
        if self.memory is not None:
            return self.admit_now(key, tokens, stream=stream)
        streams = key.max_parallel_streams if stream else None
        if key.rpm is None and key.tpm is None and streams is None:
            return None
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

    def admit_now(self, key: Key, tokens: int, *, stream: bool) -> Hold | None:
        """`admit` with the embedded state (`self.memory`), without a coroutine: the same
        steps in the same order (streams, rpm, tpm), `tokens` the request's ceiling."""
        memory = self.memory
        assert memory is not None  # the caller checked
        streams = key.max_parallel_streams if stream else None
        rpm, tpm = key.rpm, key.tpm
        if rpm is None and tpm is None and streams is None:
            return None
        lease = None
        if streams is not None:
            lease = memory.take_lease(f"kstreams:{key.id}", streams, ttl=self.lease_ttl)
            if lease is None:
                raise Limited("streams", 1.0, "the key's max_parallel_streams are all open")
        reserved = 0
        if rpm is not None:
            decision = memory.take_units(f"krpm:{key.id}", rpm)
            if not decision.allowed:
                if lease is not None:
                    memory.drop(lease.key, lease.token)
                raise Limited("rate_limited", decision.retry_after, "the key's rpm is used up")
        if tpm is not None:
            reserved = tokens if tokens < tpm else tpm
            decision = memory.take_units(f"ktpm:{key.id}", tpm, reserved)
            if not decision.allowed:
                if rpm is not None:  # not served: its request goes back
                    memory.take_units(f"krpm:{key.id}", rpm, -1)
                if lease is not None:
                    memory.drop(lease.key, lease.token)
                raise Limited("tpm", decision.retry_after, "the key's tpm is used up")
        return Hold(key, reserved, lease)

    def settle(self, hold: Hold, used: int | None) -> asyncio.Task[None] | None:
        """End `hold`: the reservation becomes `used` tokens (None: nothing was used, give it
        all back) and the lease is released. Done now with the embedded state; otherwise
        runs on as its own task (None: nothing left to do)."""
        key, used = hold.key, used or 0
        if hold.lease is None and (key.tpm is None or used == hold.reserved):
            return None
        memory = self.memory
        if memory is not None:
            if hold.lease is not None:
                memory.drop(hold.lease.key, hold.lease.token)
            if key.tpm is not None and used != hold.reserved:
                extra = used - hold.reserved  # over the reservation: taken even over the limit
                memory.take_units(f"ktpm:{key.id}", key.tpm, extra, force=extra > 0)
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
