"""A deployment's recent time to first byte: one exponentially weighted average for streams
(request written -> first chunk) and one for whole answers (request written -> response head).

Kept per deployment in this process (its provider actor owns one); the `latency` strategy reads
it synchronously while planning. Only successful attempts are measured: a failing deployment is
taken out by its health, not by its latency.

With Redis, `modelrouter.routing.fleet` shares each replica's averages: `estimate` is then the
average with the newest sample, this replica's or another's (`heard`), so a deployment one
replica saw slow down (or speed up) is ranked by that on every replica.
"""

from __future__ import annotations

import time
from typing import Final

ALPHA: Final = 0.3  # the newest sample's weight: a deployment that slows is noticed in a few
# A sample over SPIKE times the average counts as SPIKE times it unless the previous sample of
# that mode was over too: one stall (a pause on this host, one slow answer) does not send the
# fastest deployment behind the others until exploration measures it again (about 50 requests);
# a deployment that really slowed is noticed on its second slow answer.
SPIKE: Final = 4.0


class Latency:
    __slots__ = (
        "fleet_stream",
        "fleet_stream_at",
        "fleet_whole",
        "fleet_whole_at",
        "spiked_stream",
        "spiked_whole",
        "stream",
        "stream_at",
        "whole",
        "whole_at",
    )

    def __init__(self) -> None:
        self.stream: float | None = None  # seconds; None: not measured yet
        self.whole: float | None = None
        self.spiked_stream = False  # the previous sample was over SPIKE times the average
        self.spiked_whole = False
        self.stream_at = 0.0  # wall clock of the newest sample (0: none)
        self.whole_at = 0.0
        # Another replica's average with the newest sample (fleet.py), and its time.
        self.fleet_stream: float | None = None
        self.fleet_stream_at = 0.0
        self.fleet_whole: float | None = None
        self.fleet_whole_at = 0.0

    def observe(self, seconds: float, *, stream: bool) -> None:
        if stream:
            self.stream, self.spiked_stream = _step(self.stream, seconds, self.spiked_stream)
            self.stream_at = time.time()
        else:
            self.whole, self.spiked_whole = _step(self.whole, seconds, self.spiked_whole)
            self.whole_at = time.time()

    def heard(self, stream: tuple[float, float] | None, whole: tuple[float, float] | None) -> None:
        """Another replica's newest (average, sample time) per mode; None: none heard."""
        self.fleet_stream, self.fleet_stream_at = stream or (None, 0.0)
        self.fleet_whole, self.fleet_whole_at = whole or (None, 0.0)

    def estimate(self, *, stream: bool) -> float | None:
        if stream:
            return self.stream if self.stream_at >= self.fleet_stream_at else self.fleet_stream
        return self.whole if self.whole_at >= self.fleet_whole_at else self.fleet_whole


def _step(old: float | None, seconds: float, spiked: bool) -> tuple[float, bool]:
    """The average after a sample, and whether that sample was a spike (over SPIKE times the
    average: counted as SPIKE times it unless the one before was a spike too)."""
    if old is None:
        return seconds, False
    spike = seconds > SPIKE * old
    if spike and not spiked:
        seconds = SPIKE * old
    return old + ALPHA * (seconds - old), spike
