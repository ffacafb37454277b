"""The Redis backend's local fallback: what it serves while Redis is away, the usage it carries
in when Redis goes away, and what it hands back when Redis returns.

- While away, limits are the configured ones divided by REDIS_EXPECTED_REPLICAS (each replica
  keeps its share of the fleet's budget).
- Going away (`enter`), each rate bucket starts from the last reply Redis gave this process for
  it (how far the shared bucket was ahead of now, aged since): a bucket the fleet had used up
  stays used up, instead of granting a fresh share at once. A GCRA bucket's "seconds ahead" is
  the same fraction of the window at the fleet's rate and at a replica's share, so it carries
  over as it is. This process's streams still running count against its local stream share.
- Coming back (`leave`, then `resync`), what was consumed locally is handed over once: the
  requests still in each local window less what was carried in (and less the calls that timed
  out here, which Redis may have run anyway), the local leases still running, the leases
  released meanwhile, the health written meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from modelrouter.state.base import Lease, RateDecision
from modelrouter.state.memory import MemoryState

if TYPE_CHECKING:
    from modelrouter.state.redis import RedisState

Guard = Callable[..., Awaitable[Any]]


class Handover:
    def __init__(self, state: RedisState, *, replicas: int, tag: str) -> None:
        self._state = state
        self._memory = MemoryState()
        self._replicas = replicas
        self._tag = tag  # local lease tokens are `<tag>:<n>`
        self._seen: dict[str, float] = {}  # rate key -> its shared bucket's TAT (local clock)
        self._in_doubt: dict[str, int] = {}  # rate calls that timed out after being sent
        self._live: set[Lease] = set()  # leases this process holds in Redis
        self._owed: list[Lease] = []  # Redis leases released while Redis was away
        self.dirty: set[str] = set()  # health written locally while Redis was away

    @property
    def replicas(self) -> int:
        return self._replicas

    def share(self, limit: int) -> int:
        return max(1, limit // self._replicas)

    # -- while Redis answers ---------------------------------------------------------------------
    def seen(self, key: str, ahead: float) -> None:
        """Redis said bucket `key` is `ahead` seconds ahead of now."""
        self._seen[key] = self._memory.now() + ahead

    def held(self, lease: Lease) -> None:
        self._live.add(lease)

    def release(self, lease: Lease, *, shared: bool) -> bool:
        """Forget `lease` here; True when Redis holds it and must be told now."""
        in_redis = lease in self._live
        if in_redis:
            self._live.discard(lease)
            self._memory.drop(lease.key, lease.token)  # counted here while Redis was away
        else:
            local = self.local_lease(lease)
            if local is not None:
                self._memory.drop(lease.key, local.token)
        if in_redis and not shared:
            self._owed.append(lease)
            return False
        return in_redis

    def owe(self, lease: Lease) -> None:
        """A release Redis did not get: sent again once Redis is back."""
        self._owed.append(lease)

    def local_lease(self, lease: Lease) -> Lease | None:
        tag, _, token = lease.token.rpartition(":")
        return Lease(lease.key, token) if tag == self._tag else None

    # -- while Redis is away ---------------------------------------------------------------------
    def enter(self) -> None:
        """Redis just went away: carry in the usage seen so far."""
        now = self._memory.now()
        for key, tat in self._seen.items():
            if tat > now:
                self._memory.carry(key, tat)
        for lease in self._live:
            self._memory.carry_lease(lease.key, lease.token)

    async def acquire_rate(self, key: str, per_minute: int, *, in_doubt: bool) -> RateDecision:
        decision = await self._memory.acquire_rate(key, self.share(per_minute))
        if in_doubt and decision.allowed:  # Redis will likely count it too: hand it over once
            self._in_doubt[key] = self._in_doubt.get(key, 0) + 1
        return decision

    async def acquire_units(
        self, key: str, per_minute: int, units: float, *, force: bool
    ) -> RateDecision:
        share = self.share(per_minute)  # a reservation larger than the share takes it whole
        units = units if force or units <= share else float(share)
        return await self._memory.acquire_units(key, share, units, force=force)

    async def acquire_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        local = await self._memory.acquire_lease(key, self.share(limit), ttl=ttl)
        return None if local is None else Lease(key, f"{self._tag}:{local.token}")

    async def renew_lease(self, lease: Lease, *, ttl: float) -> None:
        local = self.local_lease(lease)
        if local is not None:
            await self._memory.renew_lease(local, ttl=ttl)

    def leases_held(self, key: str) -> int:
        return self._memory.leases_held(key)

    # -- coming back -----------------------------------------------------------------------------
    def leave(self) -> Resync:
        """Redis is back: take what is to be handed over, and empty the local state."""
        debts, leases = self._memory.export()
        handed = [(Lease(key, f"{self._tag}:{token}"), left) for key, token, left in leases]
        self._live.update(lease for lease, _ in handed)
        carried = Handed(
            debts=debts, leases=handed, in_doubt=self._in_doubt, owed=self._owed, dirty=self.dirty
        )
        self._in_doubt, self._owed, self.dirty = {}, [], set()
        return Resync(self, self._state, carried)

    def still_live(self, lease: Lease) -> bool:
        return lease in self._live


@dataclass(frozen=True, kw_only=True)
class Handed:
    """What one handover carries back to Redis."""

    debts: dict[str, float]  # rate key -> seconds its local bucket is ahead by local use
    leases: list[tuple[Lease, float]]  # local leases still running, with their time left
    in_doubt: dict[str, int]
    owed: list[Lease]
    dirty: set[str]


class Resync:
    """One handover, run once Redis is back (each step through the backend's guard: if Redis
    fails again meanwhile, the rest is skipped and the backend is local again)."""

    def __init__(self, local: Handover, state: RedisState, handed: Handed) -> None:
        self._local = local
        self._state = state
        self._handed = handed

    async def resync(self, guard: Guard) -> None:
        state, handed = self._state, self._handed
        for key, ahead in handed.debts.items():
            await self._hand_over_rate(guard, key, ahead)
        # Each lease is sent only if still running at that moment, on the connection its
        # release would take: a release that comes later is also applied later.
        for lease, left in handed.leases:
            if self._local.still_live(lease):
                await guard("resync", partial(self._readd, lease, left))
        for lease, ttl in list(state.kept.items()):
            if self._local.still_live(lease):  # it may have expired during a long outage
                await guard("resync", partial(self._readd, lease, ttl))
        for lease in handed.owed:
            if state.mode == "redis":
                state.fast.zrem(state.key(lease.key), lease.token, lease)
        for provider in handed.dirty:
            await guard("resync", partial(state.write_health, provider))
        await state.refetch_health()

    def _readd(self, lease: Lease, ttl: float) -> Awaitable[Any]:
        state = self._state
        return state.fast.script(
            state.scripts.lease_renew, [state.key(lease.key)], [lease.token, ttl, 1]
        )

    async def _hand_over_rate(self, guard: Guard, key: str, ahead: float) -> None:
        """Requests still in the local window, less those Redis ran anyway (a call that timed
        out here was still executed there once Redis caught up): each is counted once."""
        state = self._state
        per_minute = state.limits.get(key)
        if not per_minute:
            return
        used = ahead * self._local.share(per_minute) / 60.0 - self._handed.in_doubt.get(key, 0)
        if used > 0:
            args: list[Any] = [per_minute, repr(used), 1]
            reply = await guard(
                "resync", partial(state.fast.script, state.scripts.gcra, [state.key(key)], args)
            )
            if reply is not None:
                self._local.seen(key, float(reply[3]))
