"""A deployment's recent time to first byte: one exponentially weighted average for streams
(request written -> first chunk) and one for whole answers (request written -> response head).

Kept per deployment in this process (its provider actor owns one); the `latency` strategy reads
it synchronously while planning. Only successful attempts are measured: a failing deployment is
taken out by its health, not by its latency.
"""

from __future__ import annotations

from typing import Final

ALPHA: Final = 0.3  # the newest sample's weight: a deployment that slows is noticed in a few


class Latency:
    __slots__ = ("stream", "whole")

    def __init__(self) -> None:
        self.stream: float | None = None  # seconds; None: not measured yet
        self.whole: float | None = None

    def observe(self, seconds: float, *, stream: bool) -> None:
        if stream:
            old = self.stream
            self.stream = seconds if old is None else old + ALPHA * (seconds - old)
        else:
            old = self.whole
            self.whole = seconds if old is None else old + ALPHA * (seconds - old)

    def estimate(self, *, stream: bool) -> float | None:
        return self.stream if stream else self.whole
