"""The console's recent figures fleet-wide (with REDIS_URL): charts, cache counts, last errors.

Every `every` seconds (EVERY, 2 s: the page's refresh) each replica publishes, off the request
path and in one pipelined round trip, what its `Recent` holds: per deployment the steps of the
5- and 60-minute charts that hold anything (sums of its 10-second buckets: at most 30 + 60 a
deployment, JSON arrays) with its cache hits and misses in the field `<replica>` of the hash
`<prefix>:{console}:charts:v1`, and its last errors in the same field of `...:errors:v1`.

A read (`GET /admin/overview`, `GET /admin/errors`) is one HGETALL: this replica's own figures
as they are now, plus every other live replica's as last published (at most `every` + a round
trip old), summed step by step (bins of the same histogram: the fleet's percentiles) or, for the
errors, merged newest first and cut to MAX_ERRORS. A field older than STALE (its replica died or
lost Redis) is ignored and deleted; the hashes expire when no replica writes. Redis away: the
reader says None and the console shows this replica's figures as `replica`; logged once per
outage. Nothing here runs per request of the gateway: recording stays in `recent.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final, TypeVar

import msgspec
import structlog

from modelrouter.observability.recent import (
    LAST_5M,
    LAST_60M,
    MAX_ERRORS,
    Count,
    ErrorEntry,
    Recent,
    Ring,
    Series,
    Step,
    Sums,
)
from modelrouter.state.replicas import Every, Outage, forget, replica_id

log = structlog.get_logger("modelrouter.console")
EVERY: Final = 2.0  # seconds between two publications
STALE: Final = 10.0  # a replica's field older than this is ignored (and deleted)
VERSION: Final = "v1"


class Published(msgspec.Struct, array_like=True, frozen=True):
    """What a replica writes in its field: JSON arrays (the client reads text)."""

    at: float  # when (epoch seconds): a field older than STALE is a replica gone

    @property
    def fits(self) -> bool:
        """Every figure is in range (checked on another replica's, before it is used)."""
        return True


class Charts(Published, array_like=True, frozen=True):
    """One replica's charts as published: per deployment, the steps of the last 5 and last
    60 minutes that hold anything; its cache's hits and misses."""

    cache_hits: Count
    cache_misses: Count
    steps: dict[str, tuple[list[Step], list[Step]]]

    @property
    def fits(self) -> bool:
        return all(step.fits for pair in self.steps.values() for steps in pair for step in steps)


class Errors(Published, array_like=True, frozen=True):
    """One replica's last errors as published, newest first."""

    errors: list[ErrorEntry]


def charted(ring: Ring, now: float) -> tuple[list[Step], list[Step]] | None:
    """A deployment's steps of the last 5 and 60 minutes; None if the hour holds nothing."""
    long = ring.steps(now, LAST_60M)
    return (ring.steps(now, LAST_5M), long) if long else None


def charts_of(recent: Recent, now: float) -> Charts:
    steps = {}
    for name, ring in recent.rings.items():
        found = charted(ring, now)
        if found is not None:
            steps[name] = found
    return Charts(now, recent.cache_hits, recent.cache_misses, steps)


def errors_of(recent: Recent, now: float) -> Errors:
    return Errors(now, list(reversed(recent.errors)))


class FleetCharts:
    """Every live replica's charts summed, per deployment, and their cache counts."""

    __slots__ = ("_long", "_short", "cache_hits", "cache_misses")

    def __init__(self) -> None:
        self._short: dict[str, Sums] = {}
        self._long: dict[str, Sums] = {}
        self.cache_hits = self.cache_misses = 0

    def add(self, charts: Charts) -> None:
        self.cache_hits += charts.cache_hits
        self.cache_misses += charts.cache_misses
        for name, (short, long) in charts.steps.items():
            self._sums(self._short, name).add(short)
            self._sums(self._long, name).add(long)

    @staticmethod
    def _sums(table: dict[str, Sums], name: str) -> Sums:
        sums = table.get(name)
        if sums is None:
            sums = table[name] = Sums()
        return sums

    def series(self, deployment: str, now: float) -> tuple[Series, Series]:
        """Its 5-minute chart (10-second steps) and 60-minute chart (1-minute steps)."""
        short, long = self._short.get(deployment, Sums()), self._long.get(deployment, Sums())
        return short.series(now, LAST_5M), long.series(now, LAST_60M)


Figures = TypeVar("Figures", bound=Published)
_CHARTS = msgspec.json.Decoder(Charts)
_ERRORS = msgspec.json.Decoder(Errors)


def _live(
    fields: dict[str, str], decoder: msgspec.json.Decoder[Figures], me: str, now: float
) -> tuple[list[Figures], list[str]]:
    """The other replicas' figures decoded, and the names of the stale or malformed fields
    (never trusted: skipped, then deleted)."""
    found: list[Figures] = []
    stale: list[str] = []
    for replica, text in fields.items():
        if replica == me:
            continue
        try:
            figures = decoder.decode(text)
        except msgspec.MsgspecError:
            stale.append(replica)
            continue
        if now - figures.at > STALE or not figures.fits:
            stale.append(replica)
            continue
        found.append(figures)
    return found, stale


def merge_charts(
    mine: Charts, fields: dict[str, str], me: str, now: float
) -> tuple[FleetCharts, list[str]]:
    """This replica's charts and the other live replicas' in `fields`, summed; the stale fields."""
    others, stale = _live(fields, _CHARTS, me, now)
    merged = FleetCharts()
    for charts in (mine, *others):
        merged.add(charts)
    return merged, stale


def merge_errors(
    mine: Errors, fields: dict[str, str], me: str, now: float, *, limit: int = MAX_ERRORS
) -> tuple[list[ErrorEntry], list[str]]:
    """The newest `limit` errors of this replica and the other live ones, newest first; the
    stale fields."""
    others, stale = _live(fields, _ERRORS, me, now)
    entries = [entry for errors in (mine, *others) for entry in errors.errors]
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:limit], stale


class RecentFleet:
    """Publishes this replica's `recent` figures and reads the fleet's."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        recent: Recent,
        *,
        every: float = EVERY,
        me: str | None = None,
    ) -> None:
        self.client = client
        self.recent = recent
        self.me = me or replica_id()
        self.charts_key = f"{prefix}:{{console}}:charts:{VERSION}"
        self.errors_key = f"{prefix}:{{console}}:errors:{VERSION}"
        self._every = Every(self.publish, every, name="console-figures")
        self._outage = Outage(log, lost="console_figures_local", restored="console_figures_fleet")
        self._encoder = msgspec.json.Encoder()

    @property
    def up(self) -> bool:
        return self._outage.up

    def start(self) -> None:
        self._every.start()

    async def close(self) -> None:
        await self._every.stop()
        # Our fields go with us (else they go stale).
        await forget(self.client, [(self.charts_key, [self.me]), (self.errors_key, [self.me])])
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def publish(self) -> None:
        """One round trip: this replica's charts and errors, each hash's TTL set to STALE."""
        now = time.time()
        recent = self.recent
        steps = {}
        for name, ring in list(recent.rings.items()):
            found = charted(ring, now)
            if found is not None:
                steps[name] = found
            # A deployment at a time (up to a millisecond for a busy hour): requests are
            # served in between.
            await asyncio.sleep(0)
        charts = Charts(now, recent.cache_hits, recent.cache_misses, steps)
        ttl = int(STALE * 1000)
        encode = self._encoder.encode
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.charts_key, self.me, encode(charts))
        pipe.pexpire(self.charts_key, ttl)
        pipe.hset(self.errors_key, self.me, encode(errors_of(self.recent, now)))
        pipe.pexpire(self.errors_key, ttl)
        try:
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure: the next one tries again
            self._outage.failed(exc)
            return
        self._outage.answered()

    async def charts(self, now: float) -> FleetCharts | None:
        """The fleet's charts and cache counts; None if Redis does not answer."""
        fields = await self._read(self.charts_key)
        if fields is None:
            return None
        merged, stale = merge_charts(charts_of(self.recent, now), fields, self.me, now)
        if stale:
            await forget(self.client, [(self.charts_key, stale)])
        return merged

    async def errors(self) -> list[ErrorEntry] | None:
        """The fleet's last errors, newest first; None if Redis does not answer."""
        fields = await self._read(self.errors_key)
        if fields is None:
            return None
        now = time.time()
        merged, stale = merge_errors(errors_of(self.recent, now), fields, self.me, now)
        if stale:
            await forget(self.client, [(self.errors_key, stale)])
        return merged

    async def _read(self, key: str) -> dict[str, str] | None:
        try:
            fields: dict[str, str] = await self.client.hgetall(key)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: this replica's figures
            self._outage.failed(exc)
            return None
        self._outage.answered()
        return fields
