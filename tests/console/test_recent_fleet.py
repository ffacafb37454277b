"""The console's figures of several replicas merged (what each publishes to Redis, read back):
charts summed step by step, percentiles read from the summed bins, the last errors merged newest
first and capped, a silent or garbled replica ignored."""

from __future__ import annotations

import msgspec
import pytest

from modelrouter.observability.recent import LAST_5M, ErrorEntry, Recent, Step
from modelrouter.observability.recent_fleet import (
    STALE,
    Charts,
    Errors,
    charts_of,
    errors_of,
    merge_charts,
    merge_errors,
)

NOW = 1_800_000_000.0  # a multiple of 60: the steps start on it


def field(figures: Charts | Errors) -> str:
    """As Redis gives it back."""
    return msgspec.json.encode(figures).decode()


def error(at: float, request_id: str) -> ErrorEntry:
    return ErrorEntry(at, request_id, "/chat", 502, "all_providers_failed", "groq", "m", 2, "k")


def test_two_replicas_charts_are_summed_step_by_step() -> None:
    mine, theirs = Recent(), Recent()
    mine.ring("groq").attempt(True, NOW)
    mine.ring("groq").attempt(False, NOW + 15)
    theirs.ring("groq").attempt(False, NOW + 1)
    theirs.ring("openrouter").attempt(True, NOW + 2)
    theirs.count_cache("hit")
    mine.count_cache("miss")
    merged, stale = merge_charts(
        charts_of(mine, NOW + 20), {"b": field(charts_of(theirs, NOW + 20))}, "a", NOW + 20
    )
    assert stale == []
    short, long = merged.series("groq", NOW + 20)
    assert [(p.attempts, p.errors) for p in short.points[-3:]] == [(2, 1), (1, 1), (0, 0)]
    assert (short.attempts, short.errors, short.error_rate) == (
        3,
        2,
        pytest.approx(2 / 3, abs=1e-4),
    )
    assert (long.points[-1].attempts, long.points[-1].errors) == (3, 2)
    assert merged.series("openrouter", NOW + 20)[0].attempts == 1, "only b had it"
    assert merged.series("unknown", NOW + 20)[0].attempts == 0
    assert (merged.cache_hits, merged.cache_misses) == (1, 1)


def test_percentiles_are_read_from_the_summed_bins_not_averaged() -> None:
    fast, slow = Recent(), Recent()
    for _ in range(90):
        fast.ring("groq").first_byte(0.008, NOW)  # the 10 ms bin
    for _ in range(10):
        slow.ring("groq").first_byte(1.2, NOW)  # the 1500 ms bin
    assert fast.ring("groq").series(NOW, window=300, step=10).ttfb_p95_ms == 10
    assert slow.ring("groq").series(NOW, window=300, step=10).ttfb_p50_ms == 1500
    merged, _ = merge_charts(charts_of(fast, NOW), {"b": field(charts_of(slow, NOW))}, "a", NOW)
    short, long = merged.series("groq", NOW)
    assert (short.ttfb_p50_ms, short.ttfb_p95_ms) == (10, 1500)
    assert (long.ttfb_p50_ms, long.ttfb_p95_ms) == (10, 1500)
    assert short.points[-1].ttfb_p95_ms == 1500


def test_a_replica_publishes_only_the_steps_that_hold_anything_and_the_bins_it_used() -> None:
    recent = Recent()
    recent.ring("groq").attempt(True, NOW - 200)
    recent.ring("groq").first_byte(0.03, NOW - 200)  # the 35 ms bin, index 3
    recent.ring("idle")
    charts = charts_of(recent, NOW)
    assert list(charts.steps) == ["groq"], "a deployment without figures is left out"
    short, long = charts.steps["groq"]
    assert short == [Step(int(NOW - 200) // 10, 1, 0, 3, [1])]
    assert long == [Step(int(NOW - 200) // 60, 1, 0, 3, [1])]
    assert len(field(charts)) < 100


def test_our_own_field_is_not_counted_twice_and_a_silent_or_garbled_one_is_stale() -> None:
    mine = Recent()
    mine.ring("groq").attempt(False, NOW)
    old = Recent()
    old.ring("groq").attempt(False, NOW - 30)
    fields = {
        "a": field(charts_of(mine, NOW - 1)),  # what we published last: we read ourselves live
        "dead": field(charts_of(old, NOW - STALE - 1)),
        "garbled": "[1, 2",
        "outside": field(Charts(NOW, 0, 0, {"groq": ([], [])})).replace(
            "[[],[]]", "[[[1,1,1,22,[1,1]]],[]]"
        ),
    }
    merged, stale = merge_charts(charts_of(mine, NOW), fields, "a", NOW)
    assert sorted(stale) == ["dead", "garbled", "outside"]
    assert merged.series("groq", NOW)[1].attempts == 1


def test_the_last_errors_are_merged_newest_first_and_capped() -> None:
    mine, theirs = Recent(), Recent()
    for n in range(30):
        mine.errors.append(error(NOW + 2 * n, f"a{n}"))  # even seconds
        theirs.errors.append(error(NOW + 2 * n + 1, f"b{n}"))  # odd seconds
    later = NOW + 60
    fields = {"b": field(errors_of(theirs, later)), "gone": field(Errors(later - STALE - 1, []))}
    merged, stale = merge_errors(errors_of(mine, later), fields, "a", later, limit=50)
    assert stale == ["gone"]
    assert len(merged) == 50
    assert [e.at for e in merged] == sorted((e.at for e in merged), reverse=True)
    assert [e.request_id for e in merged[:3]] == ["b29", "a29", "b28"]
    assert merged[-1].request_id == "a5"  # the 10 oldest of 60 left out


def test_a_step_outside_the_histogram_is_refused_when_decoded() -> None:
    too_many = b"[1,1,0,0,[" + b"1," * 23 + b"1]]"
    for garbled in (
        b"[1,-1,0,0,[]]",
        b"[1,1,0,-1,[1]]",
        b"[1,1,0,23,[]]",
        b"[1,1,0,0,[-1]]",
        too_many,
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(garbled, type=Step)
    assert not msgspec.json.decode(b"[1,1,0,22,[1,1]]", type=Step).fits  # checked before summed
    assert msgspec.json.decode(b"[1,1,0,22,[1]]", type=Step).fits
    assert LAST_5M.seconds // LAST_5M.step == 30
