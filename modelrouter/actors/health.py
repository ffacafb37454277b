"""A provider's health: consecutive failures, blacklist with exponential backoff, half-open probe.

Owned by one ProviderActor and mutated only from its loop; persisted as a `HealthRecord` so a
restarted actor (or another replica) starts from the same view.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from modelrouter.state import HealthRecord

HealthState = Literal["ok", "half_open", "blacklisted"]
JITTER = 0.1  # +-10%, so replicas that saw the same failure do not all probe at the same instant


def backoff_delay(
    failures: int,
    *,
    base: float,
    maximum: float,
    auth_error: bool = False,
    retry_after: float | None = None,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """min(base * 2^(n-1), max) with jitter; an auth error waits the maximum.

    The upstream's Retry-After wins when it is longer.
    """
    if auth_error:
        delay = maximum
    else:
        delay = min(base * 2 ** min(failures - 1, 62), maximum)
        delay = min(delay * rand(1 - JITTER, 1 + JITTER), maximum)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


class Health:
    __slots__ = ("blacklisted_until", "epoch", "failures", "last_reason", "probe_in_flight")

    def __init__(self, record: HealthRecord | None = None) -> None:
        record = record or HealthRecord()
        self.failures = record.failures
        self.blacklisted_until = record.blacklisted_until
        self.last_reason = record.last_reason
        # Bumped at each blacklist decision: an attempt admitted under an older epoch was already
        # accounted for, so a burst of concurrent failures escalates the backoff only once.
        self.epoch = 0
        self.probe_in_flight = False

    def state(self, now: float) -> HealthState:
        if now < self.blacklisted_until:
            return "blacklisted"
        return "half_open" if self.failures else "ok"

    def record(self) -> HealthRecord:
        return HealthRecord(self.failures, self.blacklisted_until, self.last_reason)

    def load(self, record: HealthRecord) -> None:
        if (record.failures, record.blacklisted_until) != (self.failures, self.blacklisted_until):
            self.failures = record.failures
            self.blacklisted_until = record.blacklisted_until
            self.last_reason = record.last_reason
            self.epoch += 1

    def fail(
        self,
        reason: str,
        now: float,
        *,
        base: float,
        maximum: float,
        retry_after: float | None = None,
    ) -> float:
        """Blacklist after a failure; returns the delay chosen."""
        self.failures += 1
        self.last_reason = reason
        delay = backoff_delay(
            self.failures,
            base=base,
            maximum=maximum,
            auth_error=reason == "auth_error",
            retry_after=retry_after,
        )
        self.blacklisted_until = now + delay
        self.epoch += 1
        return delay

    def extend(self, now: float, retry_after: float) -> None:
        """A late failure from an older epoch may still carry a longer Retry-After."""
        self.blacklisted_until = max(self.blacklisted_until, now + retry_after)

    def succeed(self) -> bool:
        """Reset after a success; True when this was a recovery."""
        recovered = self.failures > 0
        self.failures = 0
        self.blacklisted_until = 0.0
        self.last_reason = None
        if recovered:
            self.epoch += 1
        return recovered
