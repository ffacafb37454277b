"""The order a model group's deployments are tried in, per strategy. Each is synchronous and
reads only in-process data (an actor's tickets, its latency averages): planning never awaits.

Whatever the order, the fallback walk skips a deployment that is failing or out of budget
(its admission says so at once), so the rest of the order is the group's fallback order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import count
from typing import TYPE_CHECKING, Final

from modelrouter.config import Strategy

if TYPE_CHECKING:
    from modelrouter.routing.candidate import Candidate

EXPLORE: Final = 0.02  # the `latency` share that goes first to a random deployment
# Every strategy takes the group's members and whether the request streams (only `latency`
# tells the two apart).
Order = Callable[["Sequence[Candidate]", bool], "list[Candidate]"]


class Strategies:
    """The strategies, sharing one random source (a seeded one makes tests exact) and the
    turn counter that breaks `least-busy` ties in rotation."""

    def __init__(self, *, rng: random.Random | None = None, explore: float = EXPLORE) -> None:
        self.rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        self.explore = explore
        self._turns = count()
        self._orders: dict[Strategy, Order] = {
            "ordered": _as_given,
            "cost": _as_given,  # the group's members are sorted by price once, when built
            "weighted": self.weighted,
            "least-busy": self.least_busy,
            "latency": self.latency,
        }

    def order(self, strategy: Strategy) -> Order:
        return self._orders[strategy]

    def weighted(self, members: Sequence[Candidate], stream: bool) -> list[Candidate]:  # noqa: ARG002
        """A random order where each deployment comes first with probability weight / total
        (Efraimidis-Spirakis: sort by u ** (1 / weight))."""
        random_ = self.rng.random
        keys = [random_() ** (1.0 / m.actor.provider.weight) for m in members]
        return [m for _, m in sorted(zip(keys, members, strict=True), key=_first, reverse=True)]

    def least_busy(self, members: Sequence[Candidate], stream: bool) -> list[Candidate]:  # noqa: ARG002
        """Fewest attempts in flight first: this process's now, plus the other replicas' as
        last heard (routing/fleet.py, with Redis); ties taken in turn."""
        start = next(self._turns) % len(members)
        rotated = [*members[start:], *members[:start]]
        return sorted(rotated, key=_busy)

    def latency(self, members: Sequence[Candidate], stream: bool) -> list[Candidate]:
        """Lowest recent time to first byte first (an unmeasured deployment first of all, so
        each is measured); a small share puts a random one first, so a deployment that got
        faster is noticed (only once each is measured: an unmeasured one is exploration
        enough, and a random pick could put a measured one before it)."""
        ordered = sorted(members, key=lambda m: m.actor.latency.estimate(stream=stream) or 0.0)
        if (
            len(ordered) > 1
            and ordered[0].actor.latency.estimate(stream=stream) is not None
            and self.rng.random() < self.explore
        ):
            ordered.insert(0, ordered.pop(self.rng.randrange(1, len(ordered))))
        return ordered


def _as_given(members: Sequence[Candidate], stream: bool) -> list[Candidate]:  # noqa: ARG001
    return list(members)


def _busy(member: Candidate) -> int:
    actor = member.actor
    return actor.in_flight + actor.elsewhere


def _first(pair: tuple[float, Candidate]) -> float:
    return pair[0]
