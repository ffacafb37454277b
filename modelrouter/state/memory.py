"""The embedded, single-process SharedState backend (the default when REDIS_URL is unset)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

from modelrouter.state.base import HealthListener, HealthRecord, Lease, RateDecision


class MemoryState:
    """Everything lives in this process; each method completes without suspending."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}  # GCRA theoretical arrival time per key
        self._leases: dict[str, dict[str, float]] = {}  # key -> token -> expiry
        self._health: dict[str, HealthRecord] = {}
        self._tokens = itertools.count(1)
        self._carried: dict[str, float] = {}  # usage seen elsewhere, not this state's to export
        self._carried_leases: set[tuple[str, str]] = set()

    @property
    def mode(self) -> str:
        return "memory"

    async def acquire_rate(self, key: str, per_minute: int) -> RateDecision:
        return gcra(self._tat, key, per_minute, self.clock())

    async def acquire_units(
        self, key: str, per_minute: int, units: float, *, force: bool = False
    ) -> RateDecision:
        return gcra(self._tat, key, per_minute, self.clock(), cost=units, force=force)

    @property
    def leases_expire(self) -> bool:
        return False

    async def acquire_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        return self.take_lease(key, limit, ttl=ttl)

    def take_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        """`acquire_lease` without a coroutine."""
        now = self.clock()
        holders = self._leases.setdefault(key, {})
        if len(holders) >= limit:
            for token in [t for t, expiry in holders.items() if expiry <= now]:
                del holders[token]
            if len(holders) >= limit:
                return None
        token = str(next(self._tokens))
        holders[token] = now + ttl
        return Lease(key, token)

    async def renew_lease(self, lease: Lease, *, ttl: float) -> None:
        holders = self._leases.get(lease.key)
        if holders is not None and lease.token in holders:
            holders[lease.token] = self.clock() + ttl

    def keep_lease(self, lease: Lease, *, ttl: float, every: float) -> None:
        """Nothing to do: this process alone holds its leases and always releases them."""

    async def release_lease(self, lease: Lease) -> None:
        holders = self._leases.get(lease.key)
        if holders is not None:
            holders.pop(lease.token, None)

    def drop(self, key: str, token: str) -> bool:
        """`release_lease` without a coroutine: True when the lease was held here."""
        holders = self._leases.get(key)
        return holders is not None and holders.pop(token, None) is not None

    def carry_lease(self, key: str, token: str) -> None:
        """Count a lease held elsewhere (in Redis) against this state's limit until dropped;
        `export` leaves it out."""
        self._leases.setdefault(key, {})[token] = math.inf
        self._carried_leases.add((key, token))

    def leases_held(self, key: str) -> int:
        return len(self._leases.get(key, ()))

    async def load_health(self, provider: str) -> HealthRecord:
        return self._health.get(provider, HealthRecord())

    async def save_health(self, provider: str, record: HealthRecord) -> None:
        self._health[provider] = record

    def watch_health(self, listener: HealthListener) -> None:  # noqa: ARG002 - protocol
        return None  # one process: nobody else writes health

    async def share_samples(
        self,
        key: str,  # noqa: ARG002 - protocol
        samples: list[float],  # noqa: ARG002 - protocol
        *,
        keep: int,  # noqa: ARG002 - protocol
        ttl: float,  # noqa: ARG002 - protocol
    ) -> list[float] | None:
        return None  # one process: its own samples are the whole window

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def now(self) -> float:
        return self.clock()

    def carry(self, key: str, tat: float) -> None:
        """Start bucket `key` as used up to `tat` (this state's clock): usage counted elsewhere
        (in Redis) that this state must respect but never hand back."""
        if tat > self._tat.get(key, -math.inf):
            self._tat[key] = tat
        self._carried[key] = tat

    def export(self) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
        """Hand over what is still live, and forget it: for each rate key, how many seconds its
        bucket is ahead of now by this state's own use (less what was carried in); for each
        lease, (key, token, seconds left)."""
        now = self.clock()
        debts = {}
        for key, tat in self._tat.items():
            own = tat - max(self._carried.get(key, now), now)
            if own > 0:
                debts[key] = own
        leases = [
            (key, token, expiry - now)
            for key, holders in self._leases.items()
            for token, expiry in holders.items()
            if expiry > now and (key, token) not in self._carried_leases
        ]
        self._tat.clear()
        self._carried.clear()
        self._carried_leases.clear()
        self._leases.clear()
        return debts, leases


def gcra(
    tats: dict[str, float],
    key: str,
    per_minute: int,
    now: float,
    *,
    cost: float = 1.0,
    force: bool = False,
) -> RateDecision:
    """Generic cell rate algorithm with a burst of `per_minute`: N at once from idle, then N/min.
    `cost` units are taken at once (negative: given back); `force` takes them even over the
    limit, up to a full bucket (as the Redis script does).

    `per_minute == 0` means unlimited.
    """
    if per_minute <= 0:
        return RateDecision(True, 0.0, 1 << 30)
    interval = 60.0 / per_minute
    window = 60.0  # burst * interval
    tat = max(tats.get(key, now), now)
    new_tat = tat + cost * interval
    if new_tat - now > window + 1e-9:
        if not force:
            return RateDecision(False, new_tat - window - now, 0)
        new_tat = now + window
    tats[key] = new_tat
    return RateDecision(True, 0.0, max(0, int((window - (new_tat - now)) / interval + 1e-9)))
