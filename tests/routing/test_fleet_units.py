"""The fleet's numbers (routing/fleet.py) as the strategies read them: the other replicas'
attempts in flight add to this one's, and the average with the newest sample ranks."""

from __future__ import annotations

import time
from collections import Counter

from modelrouter.routing.fleet import STALE, apply, encode
from modelrouter.routing.latency import Latency
from tests.routing.test_planning import first, group_of, request


class Shared:
    def __init__(self, name: str, in_flight: int = 0) -> None:
        self.name = name
        self.in_flight = in_flight
        self.elsewhere = 0
        self.latency = Latency()


def test_least_busy_counts_the_other_replicas_attempts() -> None:
    (a, b, c), plan = group_of("least-busy", "a", "b", "c")
    a.in_flight, b.in_flight, c.in_flight = 1, 1, 1
    a.elsewhere, b.elsewhere, c.elsewhere = 5, 0, 2
    assert [first(plan, request("fast")) for _ in range(3)] == ["b"] * 3


def test_latency_ranks_by_the_average_with_the_newest_sample_whoever_took_it() -> None:
    (a, b), plan = group_of("latency", "a", "b")
    a.latency.observe(0.01, stream=False)
    b.latency.observe(0.05, stream=False)
    assert first(plan, request("fast")) == "a"
    a.latency.heard(None, (0.3, time.time() + 1))  # another replica saw `a` slow down since
    assert first(plan, request("fast")) == "b"
    a.latency.observe(0.01, stream=False)  # then this one measured it again, later still...
    a.latency.whole_at = time.time() + 2
    assert first(plan, request("fast")) == "a"


def test_a_replica_never_measured_ranks_by_what_the_fleet_measured() -> None:
    (a, b, c), plan = group_of("latency", "a", "b", "c")
    now = time.time()
    for actor, seconds in ((a, 0.2), (b, 0.01), (c, 0.05)):
        actor.latency.heard(None, (seconds, now))
    firsts = Counter(first(plan, request("fast")) for _ in range(500))
    assert firsts["b"] >= 450, firsts
    assert first(plan, request("fast"), stream=True) == "a", "streams: none heard, file order"


def test_apply_sums_fresh_replicas_skips_its_own_and_names_stale_or_malformed_ones() -> None:
    now = time.time()
    one, two, old = Shared("d", 3), Shared("d", 4), Shared("d", 9)
    one.latency.observe(0.02, stream=True)
    two.latency.observe(0.05, stream=False)
    fields = {
        "me": encode(Shared("d", 100), now),
        "one": encode(one, now),
        "two": encode(two, now),
        "old": encode(old, now - STALE - 1),
        "bad": "not a field",
    }
    actor = Shared("d")
    assert sorted(apply(actor, fields, "me", now)) == ["bad", "old"]
    assert actor.elsewhere == 7
    assert actor.latency.fleet_stream == 0.02
    assert actor.latency.fleet_whole == 0.05
    assert actor.latency.estimate(stream=True) == 0.02, "heard, nothing local"
