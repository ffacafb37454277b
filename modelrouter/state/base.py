"""The SharedState interface: rate budgets, concurrency leases and provider health.

The embedded backend (`memory`) keeps them in this process; the Redis backend shares them across
replicas. Callers never know which one they talk to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec


class RateDecision(msgspec.Struct, frozen=True, gc=False):
    allowed: bool
    retry_after: float = 0.0  # seconds until one more request fits, when not allowed
    remaining: int = 0  # requests that would still fit right now


class Lease(msgspec.Struct, frozen=True, gc=False):
    key: str
    token: str


class HealthRecord(msgspec.Struct, frozen=True):
    """A provider's health as every replica sees it. Times are wall-clock (epoch seconds)."""

    failures: int = 0  # consecutive failures: also the backoff level (delay = base * 2^(n-1))
    blacklisted_until: float = 0.0
    last_reason: str | None = None
    version: int = 0  # order of the shared record's writes (Redis); 0 for a local record


HealthListener = Callable[[str, HealthRecord], None]


class SharedState(Protocol):
    @property
    def mode(self) -> str:
        """'memory' or 'redis'; 'degraded' while a shared backend runs on its local fallback."""
        ...

    async def acquire_rate(self, key: str, per_minute: int) -> RateDecision:
        """Take one request from the GCRA bucket `key` (burst = per_minute) if it has budget."""
        ...

    async def acquire_units(
        self, key: str, per_minute: int, units: float, *, force: bool = False
    ) -> RateDecision:
        """Take `units` at once from the GCRA bucket `key` (per_minute units a minute, burst =
        per_minute), if they fit; `force` takes them even over the limit (up to a full
        bucket); negative units give back what a reservation did not use."""
        ...

    @property
    def leases_expire(self) -> bool:
        """True when a lease not renewed within its TTL is lost (shared with other processes);
        False when only this process holds leases, which it always releases itself."""
        ...

    async def acquire_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        """Take one of `limit` concurrency slots for `ttl` seconds, or None when all are taken."""
        ...

    async def renew_lease(self, lease: Lease, *, ttl: float) -> None: ...

    def keep_lease(self, lease: Lease, *, ttl: float, every: float) -> None:
        """Renew `lease` for `ttl` at least every `every` seconds until it is released (one
        renewal pass for all of this process's leases, not a task per lease)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the slot back. The release is on its way once this is called: cancelling the
        caller afterwards does not keep the slot held."""
        ...

    async def load_health(self, provider: str) -> HealthRecord: ...

    async def save_health(self, provider: str, record: HealthRecord) -> None: ...

    def watch_health(self, listener: HealthListener) -> None:
        """Call `listener(provider, record)` whenever another writer changes a provider's health
        (another replica, or a merge of concurrent writes). Never called for a single process."""
        ...

    async def start(self) -> None:
        """Connect (a shared backend); serving may begin even if that fails (degraded)."""
        ...

    async def close(self) -> None: ...
