"""Recent figures of this replica for the console (`/admin/overview`, `/admin/errors`).

Per deployment, a ring of 10-second buckets covering the last hour: attempts, failed attempts
and a coarse histogram of time to first byte. Recording is O(1) (one bucket, reset when its
slot comes round again), once per attempt and once per request, never per chunk; reading
(every 2 s at most, per console tab) sums at most an hour of buckets into a chart's `Step`s
(only those that hold anything), and `Sums` turns steps into a `Series`.

Plus the last errors (what failed, never a message, prompt or key) and the response cache's
hits and misses. All of it lives in this process; with REDIS_URL, `recent_fleet.py` publishes
it (the steps: bins of one histogram add up) and merges every replica's for the console.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from itertools import accumulate
from operator import add
from typing import Annotated, NamedTuple

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


class Window(NamedTuple):
    """A chart's span and step, in seconds (both multiples of BUCKET_SECONDS)."""

    seconds: int
    step: int


LAST_5M = Window(300, 10)
LAST_60M = Window(3600, 60)


Count = Annotated[int, msgspec.Meta(ge=0)]


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


class Step(msgspec.Struct, array_like=True, frozen=True):
    """One chart step's sums, as a replica publishes them (with Redis): `number` is the step's
    start over its length; `ttfb` the histogram's bins from index `low` on, without the empty
    bins before and after (most requests fall in a few bins)."""

    # The constraints are checked when a step is decoded (another replica's), not when made.
    number: int
    attempts: Count
    errors: Count
    low: Annotated[int, msgspec.Meta(ge=0, lt=_BINS)] = 0
    ttfb: Annotated[list[Count], msgspec.Meta(max_length=_BINS)] = msgspec.field(
        default_factory=list
    )

    @property
    def fits(self) -> bool:
        """Its bins are the histogram's (a decoded step is checked before it is summed)."""
        return self.low + len(self.ttfb) <= _BINS


class Sums:
    """Steps summed by number: one ring's, or every replica's ring of one deployment (bins of
    one histogram add up, so percentiles are read from the fleet's bins)."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[int, list[int]] = {}  # number: [attempts, errors, *bins]

    def add(self, steps: Iterable[Step]) -> Sums:
        rows = self._rows
        for step in steps:
            row = rows.get(step.number)
            if row is None:
                row = rows[step.number] = [0] * (2 + _BINS)
            row[0] += step.attempts
            row[1] += step.errors
            low, high = 2 + step.low, 2 + step.low + len(step.ttfb)
            row[low:high] = map(add, row[low:high], step.ttfb)
        return self

    def series(self, now: float, window: Window) -> Series:
        """The chart of `window` up to `now`: steps aligned on the clock (a point keeps its
        place from one read to the next); the last one is the step under way."""
        current = int(now) // window.step
        points: list[Point] = []
        total = [0] * (2 + _BINS)
        for number in range(_first(current, window), current + 1):
            row = self._rows.get(number)
            if row is None:
                points.append(Point(number * window.step, 0, 0, None, None, None))
                continue
            total[:] = map(add, total, row)
            p50, p95 = _quantiles(row[2:])
            points.append(
                Point(number * window.step, row[0], row[1], _rate(row[1], row[0]), p50, p95)
            )
        p50, p95 = _quantiles(total[2:])
        return Series(
            window.seconds,
            window.step,
            total[0],
            total[1],
            _rate(total[1], total[0]),
            p50,
            p95,
            points,
        )


def _first(current: int, window: Window) -> int:
    return current - window.seconds // window.step + 1


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

    def steps(self, now: float, window: Window) -> list[Step]:
        """The steps of `window` up to `now` that hold anything, oldest first."""
        per_step = window.step // BUCKET_SECONDS
        current = int(now) // window.step
        epoch, ttfb = self._epoch, self._ttfb
        found: list[Step] = []
        for number in range(_first(current, window), current + 1):
            buckets = range(number * per_step, (number + 1) * per_step)
            slots = [bucket % BUCKETS for bucket in buckets if epoch[bucket % BUCKETS] == bucket]
            if not slots:
                continue
            bins = ttfb[slots[0]]
            for slot in slots[1:]:
                bins = list(map(add, bins, ttfb[slot]))
            attempts = sum(self._attempts[slot] for slot in slots)
            found.append(_step(number, attempts, sum(self._errors[slot] for slot in slots), bins))
        return found

    def series(self, now: float, *, window: int, step: int) -> Series:
        """The last `window` seconds in steps of `step` (both multiples of BUCKET_SECONDS)."""
        frame = Window(window, step)
        return Sums().add(self.steps(now, frame)).series(now, frame)


def _step(number: int, attempts: int, errors: int, bins: list[int]) -> Step:
    low = 0
    while low < _BINS and not bins[low]:
        low += 1
    high = _BINS
    while high > low and not bins[high - 1]:
        high -= 1
    return Step(number, attempts, errors, low if high > low else 0, bins[low:high])


def _rate(errors: int, attempts: int) -> float | None:
    return round(errors / attempts, 4) if attempts else None


def percentile(bins: list[int], q: float) -> float | None:
    """The upper bound (ms) of the bin holding the `q` quantile; None without samples. Past the
    last bound: that bound (the chart says "over a minute" by its ceiling)."""
    total = sum(bins)
    return _bound(list(accumulate(bins)), q * total) if total else None


def _quantiles(bins: list[int]) -> tuple[float | None, float | None]:
    """p50 and p95, as `percentile`'s."""
    seen = list(accumulate(bins))
    total = seen[-1]
    if not total:
        return None, None
    return _bound(seen, 0.5 * total), _bound(seen, 0.95 * total)


def _bound(seen: list[int], rank: float) -> float:
    """`seen`: the bins' running sums; the first bin that reaches `rank` holds the quantile."""
    return TTFB_BOUNDS_MS[min(bisect_left(seen, rank), len(TTFB_BOUNDS_MS) - 1)]


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
