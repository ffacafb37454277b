"""Recent figures of this replica for the console (`/admin/overview`, `/admin/errors`).

Per deployment, a ring of 10-second buckets covering the last hour: attempts, failed attempts
and a coarse histogram of time to first byte. Recording is O(1) (one bucket, reset when its
slot comes round again), once per attempt and once per request, never per chunk; reading
(every 2 s at most, per console tab) sums at most an hour of buckets.

Plus the last errors (what failed, never a message, prompt or key) and the response cache's
hits and misses. All of it lives in this process: the JSON that shows it says `replica`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

import msgspec

BUCKET_SECONDS = 10
BUCKETS = 360  # an hour
# Upper bounds (ms) of the time-to-first-byte bins; a percentile is read as its bin's bound.
TTFB_BOUNDS_MS: tuple[float, ...] = (
    5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 30000, 60000,
)  # fmt: skip
_BINS = len(TTFB_BOUNDS_MS) + 1  # the last: over a minute
MAX_ERRORS = 50


class Point(msgspec.Struct, frozen=True):
    """One step of a chart: `t` is its start (epoch seconds)."""

    t: int
    attempts: int
    errors: int
    error_rate: float | None  # None: no attempt in the step
    ttfb_p50_ms: float | None  # None: no request answered in the step
    ttfb_p95_ms: float | None


class Series(msgspec.Struct, frozen=True):
    """A chart: `points` oldest first, each `step_seconds` long; totals over all of them."""

    window_seconds: int
    step_seconds: int
    attempts: int
    errors: int
    error_rate: float | None
    ttfb_p50_ms: float | None
    ttfb_p95_ms: float | None
    points: list[Point]


class Ring:
    """One deployment's last hour in 10-second buckets."""

    __slots__ = ("_attempts", "_epoch", "_errors", "_ttfb")

    def __init__(self) -> None:
        self._epoch = [-1] * BUCKETS  # the bucket number each slot holds now
        self._attempts = [0] * BUCKETS
        self._errors = [0] * BUCKETS
        self._ttfb = [[0] * _BINS for _ in range(BUCKETS)]

    def _slot(self, now: float) -> int:
        number = int(now) // BUCKET_SECONDS
        slot = number % BUCKETS
        if self._epoch[slot] != number:  # an hour-old bucket: start it afresh
            self._epoch[slot] = number
            self._attempts[slot] = self._errors[slot] = 0
            bins = self._ttfb[slot]
            bins[:] = [0] * _BINS
        return slot

    def attempt(self, ok: bool, now: float) -> None:
        slot = self._slot(now)
        self._attempts[slot] += 1
        if not ok:
            self._errors[slot] += 1

    def first_byte(self, seconds: float, now: float) -> None:
        self._ttfb[self._slot(now)][bisect_left(TTFB_BOUNDS_MS, seconds * 1000)] += 1

    def series(self, now: float, *, window: int, step: int) -> Series:
        """The last `window` seconds in steps of `step` (both multiples of BUCKET_SECONDS)."""
        per_step = step // BUCKET_SECONDS
        last = int(now) // BUCKET_SECONDS
        # Steps aligned on the clock (a point keeps its place from one read to the next); the
        # last one is the step under way.
        first = last - last % per_step - (window // step - 1) * per_step
        points: list[Point] = []
        total_attempts = total_errors = 0
        total_bins = [0] * _BINS
        for start in range(first, last + 1, per_step):
            attempts = errors = 0
            bins = [0] * _BINS
            for number in range(start, min(start + per_step, last + 1)):
                slot = number % BUCKETS
                if self._epoch[slot] != number:
                    continue
                attempts += self._attempts[slot]
                errors += self._errors[slot]
                for index, count in enumerate(self._ttfb[slot]):
                    bins[index] += count
            total_attempts += attempts
            total_errors += errors
            for index, count in enumerate(bins):
                total_bins[index] += count
            points.append(
                Point(
                    start * BUCKET_SECONDS,
                    attempts,
                    errors,
                    _rate(errors, attempts),
                    percentile(bins, 0.5),
                    percentile(bins, 0.95),
                )
            )
        return Series(
            window,
            step,
            total_attempts,
            total_errors,
            _rate(total_errors, total_attempts),
            percentile(total_bins, 0.5),
            percentile(total_bins, 0.95),
            points,
        )


def _rate(errors: int, attempts: int) -> float | None:
    return round(errors / attempts, 4) if attempts else None


def percentile(bins: list[int], q: float) -> float | None:
    """The upper bound (ms) of the bin holding the `q` quantile; None without samples. Past the
    last bound: that bound (the chart says "over a minute" by its ceiling)."""
    total = sum(bins)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(bins):
        seen += count
        if seen >= rank and count:
            return TTFB_BOUNDS_MS[min(index, len(TTFB_BOUNDS_MS) - 1)]
    return TTFB_BOUNDS_MS[-1]  # pragma: no cover - the loop always reaches the rank


class ErrorEntry(msgspec.Struct, frozen=True):
    """One failed request, as the console lists it: what and where, never what was said."""

    at: float  # epoch seconds
    request_id: str
    route: str
    status: int
    type: str | None  # the error type the client got (e.g. `all_providers_failed`)
    provider: str | None  # the last deployment tried
    model: str | None
    attempts: int
    client: str  # the client key's id (a hash), never the key


class Recent:
    """This replica's recent figures: one ring per deployment, the last errors, cache counts."""

    def __init__(self, *, max_errors: int = MAX_ERRORS) -> None:
        self.rings: dict[str, Ring] = {}
        self.errors: deque[ErrorEntry] = deque(maxlen=max_errors)
        self.cache_hits = 0
        self.cache_misses = 0  # misses and bypasses: requests the cache did not answer

    def ring(self, deployment: str) -> Ring:
        ring = self.rings.get(deployment)
        if ring is None:
            ring = self.rings[deployment] = Ring()
        return ring

    def count_cache(self, result: str) -> None:
        if result == "hit":
            self.cache_hits += 1
        else:
            self.cache_misses += 1
