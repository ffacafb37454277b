"""The console's figures of a replica: a deployment's last hour in 10-second buckets (attempts,
errors, time to first byte), read as 5- and 60-minute series; old buckets are forgotten."""

from __future__ import annotations

import pytest

from modelrouter.observability.recent import (
    BUCKET_SECONDS,
    BUCKETS,
    TTFB_BOUNDS_MS,
    Recent,
    Ring,
    percentile,
)

NOW = 1_800_000_000.0  # a multiple of 60: the steps start on it


def test_attempts_and_errors_land_in_the_current_step() -> None:
    ring = Ring()
    ring.attempt(True, NOW)
    ring.attempt(False, NOW + 1)
    ring.attempt(False, NOW + 2)
    series = ring.series(NOW + 5, window=300, step=10)
    assert series.points[-1].t == int(NOW)
    assert (series.attempts, series.errors) == (3, 2)
    assert series.points[-1].error_rate == pytest.approx(2 / 3, abs=1e-4)
    assert len(series.points) == 300 // 10
    assert all(p.attempts == 0 and p.error_rate is None for p in series.points[:-1])


def test_first_bytes_give_p50_and_p95_as_bin_bounds() -> None:
    ring = Ring()
    for _ in range(90):
        ring.first_byte(0.008, NOW)  # 8 ms: the 10 ms bin
    for _ in range(10):
        ring.first_byte(1.2, NOW)  # 1200 ms: the 1500 ms bin
    series = ring.series(NOW, window=3600, step=60)
    assert (series.ttfb_p50_ms, series.ttfb_p95_ms) == (10, 1500)
    assert len(series.points) == 60
    assert series.points[-1].ttfb_p95_ms == 1500


def test_a_minute_step_sums_its_six_buckets() -> None:
    ring = Ring()
    for second in range(0, 60, BUCKET_SECONDS):
        ring.attempt(second != 0, NOW + second)
    minute = ring.series(NOW + 59, window=3600, step=60).points[-1]
    assert (minute.attempts, minute.errors) == (6, 1)
    five = ring.series(NOW + 59, window=300, step=10)
    assert [p.attempts for p in five.points[-6:]] == [1] * 6


def test_an_hour_old_bucket_is_forgotten_when_its_slot_comes_round() -> None:
    ring = Ring()
    ring.attempt(False, NOW)
    later = NOW + BUCKETS * BUCKET_SECONDS  # the same slot, an hour on
    assert ring.series(later, window=3600, step=60).attempts == 0
    ring.attempt(True, later)
    series = ring.series(later, window=3600, step=60)
    assert (series.attempts, series.errors) == (1, 0)


def test_a_percentile_of_nothing_is_none_and_past_the_last_bound_is_that_bound() -> None:
    assert percentile([0] * (len(TTFB_BOUNDS_MS) + 1), 0.5) is None
    ring = Ring()
    ring.first_byte(120.0, NOW)  # two minutes
    assert ring.series(NOW, window=300, step=10).ttfb_p95_ms == TTFB_BOUNDS_MS[-1]


def test_the_last_errors_are_bounded_and_cache_answers_counted() -> None:
    recent = Recent(max_errors=2)
    assert recent.ring("groq") is recent.ring("groq")
    for result in ("hit", "miss", "bypass", "hit"):
        recent.count_cache(result)
    assert (recent.cache_hits, recent.cache_misses) == (2, 2)
    recent.errors.extend([1, 2, 3])  # type: ignore[list-item]
    assert list(recent.errors) == [2, 3]
