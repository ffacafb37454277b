"""A deployment's own `tpm` and `max_parallel_streams` (routing file), with the shared state's
operations the keys' limits use (modelrouter/tenants/limits.py): the tpm bucket is the GCRA
script with a cost (the request's token ceiling reserved at admission, settled on the
attempt's real usage at its end), the streams are leases. State keys are hash-tagged per
deployment (`tpm:{name}`, `streams:{name}`, as `rpm:{name}`), so with Redis they are shared
by every replica.

A deployment with neither has no `DeploymentLimits` at all: its attempts pay nothing here.
"""

from __future__ import annotations

import asyncio
import math

from modelrouter.actors.messages import Admission, Attempt, AttemptResult
from modelrouter.state.base import Lease, SharedState
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.limits import DEFAULT_RESERVE_TOKENS


class DeploymentHold:
    """What one attempt holds against its deployment: tokens reserved, and a stream lease."""

    __slots__ = ("lease", "reserved", "tpm")

    def __init__(self, tpm: int, reserved: int, lease: Lease | None) -> None:
        self.tpm = tpm  # the limit it was reserved under (a reload may change the actor's)
        self.reserved = reserved
        self.lease = lease


class DeploymentLimits:
    """Admission against one deployment's tpm and streams; `settling` (the actor's, kept
    across reloads) holds the settles still running."""

    def __init__(
        self,
        state: SharedState,
        name: str,
        *,
        tpm: int,
        max_parallel_streams: int,
        settling: set[asyncio.Task[None]],
        lease_ttl: float = 30.0,
        renew_every: float = 10.0,
        default_output: int = DEFAULT_RESERVE_TOKENS,
    ) -> None:
        self.state = state
        self.tpm = tpm  # 0: none
        self.streams = max_parallel_streams  # 0: none
        self.tpm_key = f"tpm:{name}"
        self.streams_key = f"streams:{name}"
        self.lease_ttl = lease_ttl if state.leases_expire else math.inf
        self.renew_every = renew_every
        self.default_output = default_output
        self._local = isinstance(state, MemoryState)  # never suspends (see settle)
        self._settling = settling

    async def take(self, attempt: Attempt) -> DeploymentHold | Admission:
        """A stream lease (streamed attempts) and the request's token ceiling, or the
        Admission saying why not, with nothing held."""
        state = self.state
        lease = None
        if self.streams and attempt.stream:
            lease = await state.acquire_lease(self.streams_key, self.streams, ttl=self.lease_ttl)
            if lease is None:
                return Admission("saturated", retry_after=1.0)
            if state.leases_expire:
                state.keep_lease(lease, ttl=self.lease_ttl, every=self.renew_every)
        tpm, reserved = self.tpm, 0
        if tpm:
            try:
                reserved = min(token_bound(attempt.request, self.default_output), tpm)
                decision = await state.acquire_units(self.tpm_key, tpm, reserved)
            except BaseException:
                if lease is not None:
                    await state.release_lease(lease)
                raise
            if not decision.allowed:
                if lease is not None:
                    await state.release_lease(lease)
                return Admission("rate_limited", retry_after=decision.retry_after)
        return DeploymentHold(tpm, reserved, lease)

    def settle(self, hold: DeploymentHold, result: AttemptResult | None) -> None:
        """End `hold`: the reservation becomes the attempt's real usage (all given back when
        it failed or was cancelled; kept when a success reported no usage), the lease is
        released. Runs now with the embedded state, else as a task a second cancellation
        cannot skip."""
        used = 0
        if result is not None and result.ok:
            usage = result.usage
            used = hold.reserved if usage is None else usage.total_tokens
        if hold.lease is None and used == hold.reserved:
            return
        settling = self._settle(hold, used)
        if self._local:
            try:
                settling.send(None)
            except StopIteration:
                return
            settling.close()
            raise RuntimeError("the embedded state suspended a settle")
        task = asyncio.get_running_loop().create_task(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, hold: DeploymentHold, used: int) -> None:
        state = self.state
        if hold.lease is not None:
            await state.release_lease(hold.lease)
        if hold.tpm and used != hold.reserved:
            # Over the reservation (a ceiling that guessed low): taken even over the limit.
            extra = used - hold.reserved
            await state.acquire_units(self.tpm_key, hold.tpm, extra, force=extra > 0)
