"""Fleet-wide inputs of `least-busy` and `latency` (with REDIS_URL), off the request path.

Every `every` seconds (REFRESH, 0.25 s) each replica writes, per deployment of a `least-busy`
or `latency` group, its attempts in flight and its two time-to-first-byte averages (with the
time of each one's newest sample) into a hash `<prefix>:{<deployment>}:fleet:v1`, one field
per replica, and reads the other replicas' fields back: one pipelined round trip for all
deployments. Planning then reads only memory:

- `least-busy` ranks by this replica's attempts in flight now plus the others' last published
  (`elsewhere`): the others' part is at most `every` + one round trip old.
- `latency` ranks by the average whose newest sample is the most recent, this replica's or
  another's (`Latency.heard`): a slowdown one replica measured is known to all within `every`.

A replica's field older than STALE (a replica that died or lost Redis) is ignored and deleted;
the hash expires when no replica writes it. Redis unreachable: each replica ranks on its own
numbers (what it was before) until Redis answers again; logged once per outage. (The task,
the stale fields and the outage are `state/replicas.py`'s, shared with the console's figures.)
Clocks: sample times are wall clocks of the replicas, so hosts should run NTP.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import structlog

from modelrouter.routing.latency import Latency
from modelrouter.state.replicas import Every, Outage, forget, replica_id

log = structlog.get_logger("modelrouter.fleet")
REFRESH: Final = 0.25  # seconds between two publications
STALE: Final = 3.0  # a replica's field older than this is ignored (and deleted)
VERSION: Final = "v1"


class Shared(Protocol):
    """What the fleet reads and sets on a provider actor."""

    name: str
    latency: Latency
    elsewhere: int  # attempts in flight on the other replicas, as last heard

    @property
    def in_flight(self) -> int: ...


def encode(actor: Shared, now: float) -> str:
    lat = actor.latency
    return " ".join(
        (
            str(actor.in_flight),
            _num(lat.stream),
            repr(lat.stream_at),
            _num(lat.whole),
            repr(lat.whole_at),
            repr(now),
        )
    )


def _num(value: float | None) -> str:
    return "-" if value is None else repr(value)


class Entry:
    """One other replica's field, parsed; malformed ones are skipped (never trusted)."""

    __slots__ = ("at", "busy", "stream", "whole")

    def __init__(self, text: str) -> None:
        busy, stream, stream_at, whole, whole_at, at = text.split(" ")
        self.busy = max(0, int(busy))
        self.stream = None if stream == "-" else (float(stream), float(stream_at))
        self.whole = None if whole == "-" else (float(whole), float(whole_at))
        self.at = float(at)


def apply(actor: Shared, fields: dict[str, str], me: str, now: float) -> list[str]:
    """Set `actor`'s view of the other replicas from its hash; the stale fields' names."""
    busy = 0
    stream: tuple[float, float] | None = None
    whole: tuple[float, float] | None = None
    stale: list[str] = []
    for replica, text in fields.items():
        if replica == me:
            continue
        try:
            entry = Entry(text)
        except ValueError:
            stale.append(replica)
            continue
        if now - entry.at > STALE:
            stale.append(replica)
            continue
        busy += entry.busy
        if entry.stream is not None and (stream is None or entry.stream[1] > stream[1]):
            stream = entry.stream
        if entry.whole is not None and (whole is None or entry.whole[1] > whole[1]):
            whole = entry.whole
    actor.elsewhere = busy
    actor.latency.heard(stream, whole)
    return stale


class Fleet:
    """Publishes and reads the fleet's numbers for the actors `shared()` returns (read at each
    refresh, so a reload's new deployments are included)."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        shared: Callable[[], Sequence[Shared]],
        *,
        every: float = REFRESH,
        me: str | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shared = shared
        self.me = me or replica_id()
        self._every = Every(self.refresh, every, name="fleet")
        self._outage = Outage(log, lost="fleet_routing_local", restored="fleet_routing_restored")

    @property
    def up(self) -> bool:
        return self._outage.up

    def key(self, deployment: str) -> str:
        return f"{self.prefix}:{{{deployment}}}:fleet:{VERSION}"

    def start(self) -> None:
        self._every.start()

    async def close(self) -> None:
        await self._every.stop()
        # Our fields go with us (else they go stale).
        await forget(self.client, [(self.key(actor.name), [self.me]) for actor in self.shared()])
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def refresh(self) -> None:
        """One round trip: publish this replica's numbers, read the others'."""
        actors = list(self.shared())
        if not actors:
            return
        now = time.time()
        ttl = int(STALE * 1000)
        pipe = self.client.pipeline(transaction=False)
        for actor in actors:
            key = self.key(actor.name)
            pipe.hset(key, self.me, encode(actor, now))
            pipe.pexpire(key, ttl)
            pipe.hgetall(key)
        try:
            results = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure: rank on local numbers
            self._lost(actors, exc)
            return
        self._outage.answered()
        stale = self._read(actors, results[2::3], now)
        if stale:
            await forget(self.client, stale)

    def _read(
        self, actors: Iterable[Shared], found: Sequence[dict[str, str]], now: float
    ) -> list[tuple[str, list[str]]]:
        stale = []
        for actor, fields in zip(actors, found, strict=True):
            gone = apply(actor, fields or {}, self.me, now)
            if gone:
                stale.append((self.key(actor.name), gone))
        return stale

    def _lost(self, actors: Iterable[Shared], exc: BaseException) -> None:
        for actor in actors:
            actor.elsewhere = 0
            actor.latency.heard(None, None)
        self._outage.failed(exc)
