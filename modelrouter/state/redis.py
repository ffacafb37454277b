"""The Redis SharedState backend: limits, leases and health shared by every replica.

- Rate limits: GCRA in one Lua script per check, on Redis' clock.
- Stream slots: leases in a sorted set (score = expiry), renewed by the stream that holds one;
  a crashed replica's leases expire by themselves.
- Health: written (merged) and published in one script; every replica's `HealthFeed` hears it
  and tells its provider actors, so reading health never costs a round trip.
- Keys: `<prefix>:{<provider>}:<kind>:<version>`; the hash tag keeps each script on one slot.
- The request path's commands go over a pipelined `Wire` (single server, Sentinel), or through
  the cluster client, which routes each key to its node.

Redis down or slow: every call is bounded by REDIS_TIMEOUT; the first failure switches this
replica to a local `MemoryState` (see `handover.py`) whose limits are divided by
REDIS_EXPECTED_REPLICAS and which starts from the usage seen so far. Redis is back when the
limits' own keyed commands succeed for a hold time (`degraded.Breaker`); what was consumed
locally is then handed over once, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from redis.asyncio import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelrouter.config import RedisSettings
from modelrouter.deadline import Deadline
from modelrouter.observability import Metrics
from modelrouter.state.base import HealthListener, HealthRecord, Lease, RateDecision
from modelrouter.state.degraded import Breaker, cause, outside_requests
from modelrouter.state.feed import HealthFeed, decode_record
from modelrouter.state.handover import Handover
from modelrouter.state.scripts import VERSION, Scripts
from modelrouter.state.wire import ClientCalls, Wire

T = TypeVar("T")
log = structlog.get_logger("modelrouter.state")
UNLIMITED = RateDecision(True, 0.0, 1 << 30)
HEALTH_TTL = 86_400  # an untouched health record is forgotten after a day
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
PROBE_KEY = "probe"  # probed when the limits have used no key yet


class RedisState:
    def __init__(
        self,
        client: Any,
        *,
        settings: RedisSettings,
        metrics: Metrics,
        min_wait: float = 0.05,
        hold: float = 0.5,
    ) -> None:
        self._client = client
        self._timeout = settings.timeout
        # The request path's commands: one pipelined connection, or the cluster client.
        self._fast: Wire | ClientCalls = (
            ClientCalls(client, timeout=self._timeout, on_lost=self._release_lost)
            if isinstance(client, RedisCluster)
            else Wire(client.connection_pool, timeout=self._timeout, on_lost=self._release_lost)
        )
        self._prefix = settings.key_prefix
        self._scripts = Scripts()
        self._id = f"{secrets.token_hex(4)}-{os.getpid()}"
        self._tokens = itertools.count(1)
        self._keys: dict[str, str] = {}
        self._limits: dict[str, int] = {}  # rate key -> per_minute, to probe and hand over
        self._lease_keys: set[str] = set()
        self._health: dict[str, HealthRecord] = {}  # last known record per provider
        self._listeners: list[HealthListener] = []
        self._kept: dict[Lease, float] = {}  # leases renewed by `_keep_all`, with their TTL
        self._keep_every = math.inf
        self._keeper: asyncio.Task[None] | None = None
        self._local = Handover(self, replicas=settings.expected_replicas, tag=f"{self._id}:m")
        self.channel = f"{self._prefix}:health:{VERSION}"
        self._feed = HealthFeed(
            client, self.channel, on_record=self._heard, on_error=self._feed_lost
        )
        self._metrics = metrics
        self._min_wait = min_wait
        self._resubscribing: asyncio.Task[None] | None = None
        self._breaker = Breaker(
            metrics=metrics,
            connect=self._connect,
            probe=self._probe,
            restore=self._restore,
            min_wait=min_wait,
            hold=hold,
        )

    # -- keys ------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """`rpm:groq` -> `mr:{groq}:rpm:v1`; `streams` -> `mr:{streams}:streams:v1`."""
        full = self._keys.get(name)
        if full is None:
            kind, _, tag = name.partition(":")
            full = self._keys[name] = f"{self._prefix}:{{{tag or kind}}}:{kind}:{VERSION}"
        return full

    def health_key(self, provider: str) -> str:
        return self.key(f"health:{provider}")

    @property
    def mode(self) -> str:
        return "redis" if self._breaker.up else "degraded"

    # what the handover works with
    @property
    def scripts(self) -> Scripts:
        return self._scripts

    @property
    def fast(self) -> Wire | ClientCalls:
        return self._fast

    @property
    def limits(self) -> dict[str, int]:
        return self._limits

    @property
    def kept(self) -> dict[Lease, float]:
        return self._kept

    # what the budget ledger (`ledger_redis.py`) works with
    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def up(self) -> bool:
        return self._breaker.up

    @property
    def replicas(self) -> int:
        return self._local.replicas

    def failed(self, op: str, exc: BaseException) -> None:
        """A call of another part on this backend's connection failed: go local (once)."""
        self._failed(op, exc)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._connect()
            await self._probe()
        except REDIS_ERRORS as exc:
            self._failed("connect", exc)
            return
        await self._restore()

    async def close(self) -> None:
        for task in (self._keeper, self._resubscribing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._feed.stop()
        await self._breaker.close()
        await self._fast.close()
        await self._client.aclose()

    # -- the guard around every call -------------------------------------------------------
    async def _redis(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run one Redis call off the request path within the timeout; None when Redis is away.
        (The request path's own calls are bounded by the wire and guarded where they are made.)
        """
        if not self._breaker.up:
            return None
        try:
            loop = asyncio.get_running_loop()
            with Deadline(loop, loop.time() + self._timeout):
                return await call()
        except REDIS_ERRORS as exc:
            self._failed(op, exc)
            return None

    def _feed_lost(self, op: str, exc: BaseException) -> None:
        """The health channel's connection broke. The limits do not depend on it: they stay on
        Redis while their own keyed commands answer (a real outage fails those too, and the
        way back resubscribes). The channel is resubscribed on its own, and every record read
        again, so a change missed meanwhile does not stay missed."""
        self._metrics.redis_errors.labels(op).inc()
        if self._resubscribing is None or self._resubscribing.done():
            outside_requests(
                log.warning, "redis_health_feed_lost", cause=cause(exc), error=type(exc).__name__
            )
            self._resubscribing = asyncio.get_running_loop().create_task(
                self._resubscribe(), name="redis-resubscribe", context=contextvars.Context()
            )

    async def _resubscribe(self) -> None:
        wait = self._min_wait
        while self._breaker.up:  # down: the way back resubscribes itself
            await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await self._feed.start()
            except REDIS_ERRORS:
                wait = min(wait * 2, 5.0)
                continue
            await self.refetch_health()
            # Restored only if nothing failed meanwhile: the limits may have gone local while
            # this waited (the way back then subscribes again and says `redis_recovered`), or the
            # channel may have been lost again (`_feed_lost` left that to this task: go round).
            if self._breaker.up and self._feed.listening:
                outside_requests(log.info, "redis_health_feed_restored")
                return

    def _failed(self, op: str, exc: BaseException) -> None:
        self._fast.reset(exc)  # a silent server costs this connection, not a queue
        if self._breaker.failed(op, exc):
            self._local.enter()

    # -- rate limits ---------------------------------------------------------------------------
    async def acquire_rate(self, key: str, per_minute: int) -> RateDecision:
        if per_minute <= 0:
            return UNLIMITED
        self._limits[key] = per_minute
        if not self._breaker.up:
            return await self._local.acquire_rate(key, per_minute, in_doubt=False)
        try:
            reply = await self._fast.script(self._scripts.gcra, [self.key(key)], [per_minute, 1, 0])
        except REDIS_ERRORS as exc:
            self._failed("rate", exc)
            # A call that timed out was sent: Redis may count it too, so it is handed over once.
            sent = isinstance(exc, TimeoutError | RedisTimeoutError)
            return await self._local.acquire_rate(key, per_minute, in_doubt=sent)
        allowed, retry_after, remaining, ahead = reply
        self._local.seen(key, float(ahead))
        return RateDecision(bool(allowed), float(retry_after), int(remaining))

    async def acquire_units(
        self, key: str, per_minute: int, units: float, *, force: bool = False
    ) -> RateDecision:
        if per_minute <= 0:
            return UNLIMITED
        self._limits[key] = per_minute
        if not self._breaker.up:
            return await self._local.acquire_units(key, per_minute, units, force=force)
        args = [per_minute, repr(float(units)), 1 if force else 0]
        try:
            reply = await self._fast.script(self._scripts.gcra, [self.key(key)], args)
        except REDIS_ERRORS as exc:
            self._failed("rate", exc)
            return await self._local.acquire_units(key, per_minute, units, force=force)
        allowed, retry_after, remaining, ahead = reply
        self._local.seen(key, float(ahead))
        return RateDecision(bool(allowed), float(retry_after), int(remaining))

    # -- leases ------------------------------------------------------------------------------
    @property
    def leases_expire(self) -> bool:
        return True

    async def acquire_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        self._lease_keys.add(key)
        if not self._breaker.up:
            return await self._local.acquire_lease(key, limit, ttl=ttl)
        token = f"{self._id}:{next(self._tokens)}"
        try:
            taken = await self._fast.script(
                self._scripts.lease_acquire, [self.key(key)], [limit, ttl, token]
            )
        except REDIS_ERRORS as exc:
            self._failed("lease_acquire", exc)
            return await self._local.acquire_lease(key, limit, ttl=ttl)
        if not taken:
            return None
        lease = Lease(key, token)
        self._local.held(lease)
        return lease

    async def renew_lease(self, lease: Lease, *, ttl: float) -> None:
        await self._local.renew_lease(lease, ttl=ttl)
        args = [lease.token, ttl, 0]
        renew = self._scripts.lease_renew
        await self._redis(
            "lease_renew", lambda: self._fast.script(renew, [self.key(lease.key)], args)
        )

    def keep_lease(self, lease: Lease, *, ttl: float, every: float) -> None:
        self._kept[lease] = ttl
        self._keep_every = min(self._keep_every, every)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep_all())

    async def _keep_all(self) -> None:
        """Renew every kept lease once per period; the renewals go out in one write."""
        while self._kept:
            await asyncio.sleep(self._keep_every)
            renewals = [self.renew_lease(lease, ttl=ttl) for lease, ttl in self._kept.items()]
            await asyncio.gather(*renewals, return_exceptions=True)

    async def release_lease(self, lease: Lease) -> None:
        self._kept.pop(lease, None)
        if self._local.release(lease, shared=self._breaker.up):
            # Queued now, nobody waits for the reply: the slot is freed even if the caller is
            # cancelled (a client gone, a shutdown). A later call of this process comes after
            # it on the wire. If it fails, it is owed until Redis is back (`_release_lost`).
            self._fast.zrem(self.key(lease.key), lease.token, lease)

    def _release_lost(self, lease: Lease, error: BaseException) -> None:
        self._local.owe(lease)
        self._failed("lease_release", error)

    def leases_held(self, key: str) -> int:
        """Leases held locally (degraded mode), for tests and /health."""
        return self._local.leases_held(key)

    # -- health ------------------------------------------------------------------------------
    def watch_health(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    async def load_health(self, provider: str) -> HealthRecord:
        self._health.setdefault(provider, HealthRecord())
        await self._fetch_health(provider)
        return self._health[provider]

    async def save_health(self, provider: str, record: HealthRecord) -> None:
        known = self._health.get(provider, HealthRecord())
        self._health[provider] = msgspec.structs.replace(record, version=known.version)
        if await self._redis("health_save", lambda: self.write_health(provider)) is None:
            self._local.dirty.add(provider)

    async def write_health(self, provider: str) -> bool:
        record = self._health[provider]
        reply = await self._scripts.health_save(
            self._client,
            [self.health_key(provider)],
            [
                record.failures,
                repr(record.blacklisted_until),
                record.last_reason or "",
                self.channel,
                provider,
                HEALTH_TTL,
            ],
        )
        self._local.dirty.discard(provider)
        self._heard(*decode_record(reply))
        return True

    async def _fetch_health(self, provider: str) -> None:
        reply = await self._redis("health_load", lambda: self._read_health(provider))
        if reply is not None and reply[3] is not None:
            failures, until, reason, version = reply
            self._heard(*decode_record((failures, until, reason or "", version, provider)))

    def _read_health(self, provider: str) -> Awaitable[list[Any]]:
        fields = ("failures", "until", "reason", "version")
        reply: Awaitable[list[Any]] = self._client.hmget(self.health_key(provider), *fields)
        return reply

    def _heard(self, provider: str, record: HealthRecord) -> None:
        """A shared record: keep it if newer than what we know, and tell the listeners."""
        known = self._health.get(provider)
        if known is not None and record.version <= known.version:
            return
        self._health[provider] = record
        for listener in self._listeners:
            listener(provider, record)

    async def refetch_health(self) -> None:
        """Read every provider's record again: Redis may have restarted empty (versions start
        again at 1), or a publication may have been missed while away."""
        for provider, record in list(self._health.items()):
            self._health[provider] = msgspec.structs.replace(record, version=0)
            await self._fetch_health(provider)

    # -- the way back --------------------------------------------------------------------------
    async def _connect(self) -> None:
        """Load the scripts and subscribe to the health channel (raises while Redis is away)."""
        async with asyncio.timeout(self._timeout * 4):
            await self._scripts.load(self._client)
            await self._feed.start()

    async def _probe(self) -> None:
        """The limits' own keyed commands, on every key they have used: Redis is back only when
        these succeed (a Cluster answers PING while its slots still answer CLUSTERDOWN)."""
        gcra, renew = self._scripts.gcra, self._scripts.lease_renew
        calls: list[Awaitable[Any]] = [
            self._fast.script(gcra, [self.key(key)], [per_minute, 0, 0])
            for key, per_minute in self._limits.items()
        ]
        calls += [
            self._fast.script(renew, [self.key(key)], ["probe", 1, 0])
            for key in self._lease_keys or (PROBE_KEY,)
        ]
        calls += [self._read_health(provider) for provider in self._health]
        try:
            async with asyncio.timeout(self._timeout * 2):
                await asyncio.gather(*calls)
        except BaseException as exc:
            self._fast.reset(exc)
            raise

    async def _restore(self) -> None:
        """Switch back to Redis, then hand over what was used locally meanwhile."""
        handed = self._local.leave()
        self._breaker.restored()
        await handed.resync(self._redis)
