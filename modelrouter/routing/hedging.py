"""Hedged streams: which requests hedge, after how long, and within what share of extra load.

A streamed request whose first attempt has produced no byte (text or tool-call delta) after the
hedge delay starts its next candidate too; the first to produce one answers (actors/hedge.py).
This module holds the policy, read synchronously on the request path, and what it learns:

- the delay: each deployment's rolling 95th percentile of time to first byte, from the samples
  the races record, shared across replicas through the state (Redis) by `refresh`, which runs
  off the request path; `HEDGE_AFTER_MS` until `min_samples` exist (or always, when set), and
  never under `HEDGE_MIN_MS`;
- the cap: hedges as a share of the recent streamed requests that could hedge (this process's
  last minute, in buckets), at most `HEDGE_MAX_EXTRA`: over it, no hedge is sent;
- the counts of outcomes (`won`: the hedge answered, `lost`: the first attempt did,
  `skipped_cap`), for /health.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Final, Literal, Protocol

import structlog

from modelrouter.config import HedgeSettings, ModelGroup, OptIn
from modelrouter.events import Usage
from modelrouter.schemas import ChatRequest

log = structlog.get_logger("modelrouter.router")
HedgeOutcome = Literal["won", "lost", "skipped_cap"]
OUTCOMES: Final[tuple[HedgeOutcome, ...]] = ("won", "lost", "skipped_cap")
KEEP: Final = 500  # samples per deployment in the rolling window (the fleet's, with Redis)
FRESH_LIMIT: Final = 1000  # new samples kept between two refreshes (a burst drops the rest)
WINDOW_TTL: Final = 3600.0  # a deployment nobody sampled for an hour starts over
REFRESH_SECONDS: Final = 1.0
BUCKET_SECONDS: Final = 10.0
BUCKETS: Final = 6  # the cap's "recent traffic": the last minute


class Hints:
    """What a stream asked of routing (its `x-modelrouter-hedge` and `x-modelrouter-continue`
    headers) and what routing did (the hedge's outcome, the loser's deployment and model, the
    deployment whose cut answer was continued). The web layer sets one in `HINTS` before
    routing the stream, only when hedging or continuation is configured at all; the routing
    task, which runs in a copy of the caller's context, reads and fills the same object."""

    __slots__ = ("continued_from", "hedge", "loser", "loser_usage", "outcome", "resume")

    def __init__(self, hedge: bool | None = None, resume: bool | None = None) -> None:
        self.hedge = hedge  # the hedge header: True on, False off, None absent
        self.resume = resume  # the continue header, likewise
        self.outcome: HedgeOutcome | None = None
        self.loser: tuple[str, str] | None = None  # (deployment, model) of a cancelled attempt
        self.loser_usage: Usage | None = None  # what the loser's upstream counted, if anything
        self.continued_from: str | None = None  # the deployment whose stream was cut


def continues(mode: OptIn) -> bool:
    """Whether this stream may be continued after a cut (CONTINUE_ON_CUT, its header)."""
    hints = HINTS.get()
    return wants(mode, None if hints is None else hints.resume)


HINTS: ContextVar[Hints | None] = ContextVar("modelrouter_hints", default=None)


def header_choice(value: str | None) -> bool | None:
    """`x-modelrouter-hedge` or `-continue`: on (true, 1) asks, off (false, 0) refuses, else
    no say."""
    if value is None:
        return None
    value = value.strip().lower()
    if value in ("on", "true", "1"):
        return True
    if value in ("off", "false", "0"):
        return False
    return None


def configured(settings: HedgeSettings, groups: Iterable[ModelGroup]) -> bool:
    """Whether any request could hedge (else the request path pays nothing for it)."""
    return settings.mode != "off" or any(g.hedge not in (None, "off") for g in groups)


def wants(mode: OptIn, asked: bool | None) -> bool:
    """on: unless the request says off; allow: only if it says on; off: never."""
    if mode == "on":
        return asked is not False
    return mode == "allow" and asked is True


class FirstBytes:
    """One deployment's time-to-first-byte samples: new ones since the last refresh, and the
    window (this replica's, or the fleet's through the state) the p95 is read from."""

    __slots__ = ("fresh", "local", "p95")

    def __init__(self) -> None:
        self.fresh: list[float] = []
        self.local: deque[float] = deque(maxlen=KEEP)
        self.p95: float | None = None  # seconds; None: fewer samples than trusted

    def observe(self, seconds: float) -> None:
        if len(self.fresh) < FRESH_LIMIT:
            self.fresh.append(seconds)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class ExtraBudget:
    """Hedges against the streamed requests that could hedge, over the last minute (buckets of
    ten seconds): a hedge is allowed while hedges + 1 <= share * requests."""

    __slots__ = ("_buckets", "_clock", "share")

    def __init__(self, share: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [bucket start, requests, hedges]

    def _current(self) -> list[float]:
        now = self._clock()
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - BUCKET_SECONDS * BUCKETS:
            buckets.popleft()
        if not buckets or buckets[-1][0] <= now - BUCKET_SECONDS:
            buckets.append([now, 0.0, 0.0])
        return buckets[-1]

    def request(self) -> None:
        self._current()[1] += 1

    def allow(self) -> bool:
        """Take a hedge from the budget if it has room (counted), else False."""
        current = self._current()
        requests = sum(b[1] for b in self._buckets)
        hedges = sum(b[2] for b in self._buckets)
        if hedges + 1 > self.share * requests:
            return False
        current[2] += 1
        return True


class Hedging:
    """The hedging policy of one router: per request, whether it may hedge and after how
    long; per deployment, its first-byte window."""

    def __init__(
        self,
        settings: HedgeSettings,
        groups: Mapping[str, OptIn | None],
        *,
        default_model: str | None = None,
    ) -> None:
        self.settings = settings
        self.modes = {name: mode for name, mode in groups.items() if mode is not None}
        self.default_model = default_model or ""  # the group `auto` (or no model) names
        self.budget = ExtraBudget(settings.max_extra)
        self.first_bytes: dict[str, FirstBytes] = {}
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._fixed = None if settings.after_ms is None else settings.after_ms / 1000
        self._default = settings.default_after_ms / 1000
        self._floor = settings.min_ms / 1000

    def adopt_windows(self, old: Hedging) -> None:
        """Keep what `old` learnt (first-byte windows, outcome counts, the extra budget) when
        a reload replaces the policy."""
        self.first_bytes = old.first_bytes
        self.counts = old.counts
        self.budget = old.budget

    def applies(self, request: ChatRequest) -> bool:
        """Whether this streamed request may hedge (its group's mode, else HEDGE; its header)."""
        model = request.model
        if model is None or model == "auto":
            model = self.default_model
        mode = self.modes.get(model, self.settings.mode)
        hints = HINTS.get()
        return wants(mode, None if hints is None else hints.hedge)

    def delay(self, deployment: str) -> float:
        if self._fixed is not None:
            return self._fixed
        window = self.first_bytes.get(deployment)
        seconds = self._default if window is None or window.p95 is None else window.p95
        return max(seconds, self._floor)

    def observe(self, deployment: str, seconds: float) -> None:
        window = self.first_bytes.get(deployment)
        if window is None:
            window = self.first_bytes[deployment] = FirstBytes()
        window.observe(seconds)

    def count(self, outcome: HedgeOutcome) -> None:
        self.counts[outcome] += 1

    async def keep_fresh(self, share: SampleShare, *, every: float = REFRESH_SECONDS) -> None:
        """Refresh every `every` seconds until cancelled (the actor system owns the task); a
        failed refresh is logged and the next one tries again."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh(share)
            except Exception:
                log.exception("hedge_refresh_failed")

    async def refresh(self, share: SampleShare) -> None:
        """Off the request path: push each deployment's new samples to the fleet's window and
        read it back (one round trip each), else keep a local window; recompute the p95."""
        for name, window in list(self.first_bytes.items()):
            fresh, window.fresh = window.fresh, []
            shared = await share(f"ttfb:{name}", fresh, keep=KEEP, ttl=WINDOW_TTL)
            if shared is None:
                window.local.extend(fresh)
                samples = list(window.local)
            else:
                samples = shared
            if len(samples) >= self.settings.min_samples:
                window.p95 = p95(samples)


class SampleShare(Protocol):
    """The state's `share_samples`, as the refresh calls it."""

    def __call__(
        self, key: str, samples: list[float], *, keep: int, ttl: float
    ) -> Awaitable[list[float] | None]: ...
