"""The Redis SharedState backend: limits, leases and health shared by every replica.

- Rate limits: GCRA in one Lua script per check, on Redis' clock.
- Stream slots: leases in a sorted set (score = expiry), renewed by the stream that holds one;
  a crashed replica's leases expire by themselves.
- Health: written (merged) and published in one script; every replica's `HealthFeed` hears it
  and tells its provider actors, so reading health never costs a round trip.
- Keys: `<prefix>:{<provider>}:<kind>:<version>`; the hash tag keeps each script on one slot.

Redis down or slow: every call is bounded by REDIS_TIMEOUT; the first failure switches this
replica to a local `MemoryState` whose limits are divided by REDIS_EXPECTED_REPLICAS (each
replica keeps its share of the fleet's budget). When Redis answers again, what was consumed
locally is handed over once (rate debt, live leases, health written meanwhile) and dropped
locally, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import msgspec
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelrouter.config import RedisSettings
from modelrouter.deadline import Deadline
from modelrouter.observability import Metrics
from modelrouter.state.base import HealthListener, HealthRecord, Lease, RateDecision
from modelrouter.state.batch import Batcher
from modelrouter.state.degraded import Breaker
from modelrouter.state.feed import HealthFeed, decode_record
from modelrouter.state.memory import MemoryState
from modelrouter.state.scripts import VERSION, Scripts

T = TypeVar("T")
UNLIMITED = RateDecision(True, 0.0, 1 << 30)
HEALTH_TTL = 86_400  # an untouched health record is forgotten after a day
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class RedisState:
    def __init__(
        self, client: Any, *, settings: RedisSettings, metrics: Metrics, min_wait: float = 0.05
    ) -> None:
        self._client = client
        # Rate and lease calls share round trips (see batch.py); a cluster client routes each
        # key to its node itself, so it is called directly.
        self._batch: Any = client if isinstance(client, RedisCluster) else Batcher(client)
        self._prefix = settings.key_prefix
        self._timeout = settings.timeout
        self._replicas = settings.expected_replicas
        self._scripts = Scripts()
        self._local = MemoryState()
        self._id = f"{secrets.token_hex(4)}-{os.getpid()}"
        self._local_tag = f"{self._id}:m"
        self._tokens = itertools.count(1)
        self._limits: dict[str, int] = {}  # rate key -> per_minute, to hand local debt over
        self._in_doubt: dict[str, int] = {}  # rate calls that timed out after being sent
        self._health: dict[str, HealthRecord] = {}  # last known record per provider
        self._dirty: set[str] = set()  # health written locally while Redis was away
        self._listeners: list[HealthListener] = []
        self._kept: dict[Lease, float] = {}  # leases renewed by `_keep_all`, with their TTL
        self._keep_every = math.inf
        self._keeper: asyncio.Task[None] | None = None
        self.channel = f"{self._prefix}:health:{VERSION}"
        self._feed = HealthFeed(client, self.channel, on_record=self._heard, on_error=self._failed)
        self._breaker = Breaker(metrics=metrics, recover=self._recover, min_wait=min_wait)

    # -- keys ------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """`rpm:groq` -> `mr:{groq}:rpm:v1`; `streams` -> `mr:{streams}:streams:v1`."""
        kind, _, tag = name.partition(":")
        return f"{self._prefix}:{{{tag or kind}}}:{kind}:{VERSION}"

    def health_key(self, provider: str) -> str:
        return self.key(f"health:{provider}")

    @property
    def mode(self) -> str:
        return "redis" if self._breaker.up else "degraded"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._recover()
        except REDIS_ERRORS as exc:
            self._failed("connect", exc)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        await self._feed.stop()
        await self._breaker.close()
        if isinstance(self._batch, Batcher):
            await self._batch.close()
        await self._client.aclose()

    # -- the guard around every call -------------------------------------------------------
    async def _redis(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        timed_out: Callable[[], None] | None = None,
    ) -> T | None:
        """Run one Redis call within the timeout; None when Redis is away (use local state).

        `timed_out` hears of a timeout: the call was sent and Redis may still run it.
        """
        if not self._breaker.up:
            return None
        try:
            loop = asyncio.get_running_loop()
            with Deadline(loop, loop.time() + self._timeout):
                return await call()
        except REDIS_ERRORS as exc:
            if timed_out is not None and isinstance(exc, TimeoutError | RedisTimeoutError):
                timed_out()
            self._failed(op, exc)
            return None

    def _failed(self, op: str, exc: BaseException) -> None:
        self._breaker.failed(op, exc)

    # -- rate limits ---------------------------------------------------------------------------
    async def acquire_rate(self, key: str, per_minute: int) -> RateDecision:
        if per_minute <= 0:
            return UNLIMITED
        self._limits[key] = per_minute
        sent = False

        def in_doubt() -> None:
            nonlocal sent
            sent = True

        reply = await self._redis(
            "rate",
            lambda: self._scripts.gcra(self._batch, [self.key(key)], [per_minute, 1, 0]),
            timed_out=in_doubt,
        )
        if reply is None:
            decision = await self._local.acquire_rate(key, self._share(per_minute))
            if sent and decision.allowed:  # Redis will likely count it too: hand it over once
                self._in_doubt[key] = self._in_doubt.get(key, 0) + 1
            return decision
        allowed, retry_after, remaining = reply
        return RateDecision(bool(allowed), float(retry_after), int(remaining))

    def _share(self, limit: int) -> int:
        return max(1, limit // self._replicas)

    # -- leases ------------------------------------------------------------------------------
    @property
    def leases_expire(self) -> bool:
        return True

    async def acquire_lease(self, key: str, limit: int, *, ttl: float) -> Lease | None:
        token = f"{self._id}:{next(self._tokens)}"
        reply = await self._redis(
            "lease_acquire",
            lambda: self._scripts.lease_acquire(self._batch, [self.key(key)], [limit, ttl, token]),
        )
        if reply is not None:
            return Lease(key, token) if reply else None
        local = await self._local.acquire_lease(key, self._share(limit), ttl=ttl)
        return None if local is None else Lease(key, f"{self._local_tag}:{local.token}")

    async def renew_lease(self, lease: Lease, *, ttl: float) -> None:
        local = self._local_lease(lease)
        if local is not None:
            await self._local.renew_lease(local, ttl=ttl)
        await self._redis(
            "lease_renew",
            lambda: self._scripts.lease_renew(
                self._batch, [self.key(lease.key)], [lease.token, ttl, 0]
            ),
        )

    def keep_lease(self, lease: Lease, *, ttl: float, every: float) -> None:
        self._kept[lease] = ttl
        self._keep_every = min(self._keep_every, every)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep_all())

    async def _keep_all(self) -> None:
        """Renew every kept lease once per period; the renewals go out in shared pipelines."""
        while self._kept:
            await asyncio.sleep(self._keep_every)
            renewals = [self.renew_lease(lease, ttl=ttl) for lease, ttl in self._kept.items()]
            await asyncio.gather(*renewals, return_exceptions=True)

    async def release_lease(self, lease: Lease) -> None:
        self._kept.pop(lease, None)
        local = self._local_lease(lease)
        if local is not None:
            await self._local.release_lease(local)
        if not self._breaker.up:
            return
        # Queued (or started) now and shielded from the caller: a cancelled caller (a client
        # gone, a shutdown) still releases the slot; no task per release.
        sent = asyncio.ensure_future(self._batch.zrem(self.key(lease.key), lease.token))
        await self._redis("lease_release", lambda: asyncio.shield(sent))

    def _local_lease(self, lease: Lease) -> Lease | None:
        tag, _, token = lease.token.rpartition(":")
        return Lease(lease.key, token) if tag == self._local_tag else None

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
        if await self._redis("health_save", lambda: self._write_health(provider)) is None:
            self._dirty.add(provider)

    async def _write_health(self, provider: str) -> bool:
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
        self._dirty.discard(provider)
        self._heard(*decode_record(reply))
        return True

    async def _fetch_health(self, provider: str) -> None:
        reply = await self._redis(
            "health_load",
            lambda: self._client.hmget(
                self.health_key(provider), "failures", "until", "reason", "version"
            ),
        )
        if reply is not None and reply[3] is not None:
            failures, until, reason, version = reply
            self._heard(*decode_record((failures, until, reason or "", version, provider)))

    def _heard(self, provider: str, record: HealthRecord) -> None:
        """A shared record: keep it if newer than what we know, and tell the listeners."""
        known = self._health.get(provider)
        if known is not None and record.version <= known.version:
            return
        self._health[provider] = record
        for listener in self._listeners:
            listener(provider, record)

    # -- reconnecting -----------------------------------------------------------------------
    async def _recover(self) -> None:
        """Connect, subscribe, then switch back to Redis and hand the local state over."""
        async with asyncio.timeout(self._timeout * 4):
            await self._client.ping()
            await self._scripts.load(self._client)
            await self._feed.start()
        debts, leases = self._local.export()
        in_doubt, self._in_doubt = self._in_doubt, {}
        self._breaker.restored()
        await self._resync(debts, leases, in_doubt)

    async def _resync(
        self,
        debts: dict[str, float],
        leases: list[tuple[str, str, float]],
        in_doubt: dict[str, int],
    ) -> None:
        for key, ahead in debts.items():
            await self._hand_over_rate(key, ahead, in_doubt.get(key, 0))
        for key, token, left in leases:
            args: list[Any] = [f"{self._local_tag}:{token}", left, 1]
            await self._redis(
                "resync", partial(self._scripts.lease_renew, self._client, [self.key(key)], args)
            )
        for provider in list(self._dirty):
            await self._redis("resync", partial(self._write_health, provider))
        for provider, record in list(self._health.items()):
            # Redis may have restarted empty (versions start again at 1): accept what it has.
            self._health[provider] = msgspec.structs.replace(record, version=0)
            await self._fetch_health(provider)

    async def _hand_over_rate(self, key: str, ahead: float, in_doubt: int) -> None:
        """Requests still in the local window, less those Redis ran anyway (a call that timed
        out here was still executed there once Redis caught up): each is counted once."""
        per_minute = self._limits.get(key)
        if not per_minute:
            return
        used = ahead * self._share(per_minute) / 60.0 - in_doubt
        if used > 0:
            args: list[Any] = [per_minute, repr(used), 1]
            await self._redis(
                "resync", partial(self._scripts.gcra, self._client, [self.key(key)], args)
            )
