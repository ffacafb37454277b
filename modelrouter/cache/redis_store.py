"""The fleet's store on Redis: answers, and the short lock that lets one replica lead.

Keys are `<prefix>:{c:<digest>}:<kind>:v1`: the hash tag keeps an answer and its lock on one
slot (Redis Cluster), and values larger than CACHE_MAX_VALUE_BYTES are never written.

Every call is bounded by REDIS_TIMEOUT. A failed or slow call turns the cache off: it is
counted, logged once, and for a growing pause (up to `max_pause`) every request bypasses the
cache; the first request after the pause probes Redis again. A request never fails for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from modelrouter.deadline import Deadline
from modelrouter.observability import Metrics

log = structlog.get_logger("modelrouter.cache")
T = TypeVar("T")
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
VERSION = "v1"


class RedisStore:
    def __init__(
        self,
        client: Any,
        metrics: Metrics,
        *,
        prefix: str = "mr",
        timeout: float = 0.25,
        ttl: float = 3600.0,
        lease: float = 10.0,
        min_pause: float = 0.5,
        max_pause: float = 30.0,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.prefix = prefix
        self.timeout = timeout
        self.ttl_ms = max(1, int(ttl * 1000))
        self.lease = lease
        self.min_pause = min_pause
        self.max_pause = max_pause
        self._pause = min_pause
        self._down_until = 0.0
        self._down = False

    def key(self, digest: str, kind: str) -> str:
        return f"{self.prefix}:{{c:{digest}}}:{kind}:{VERSION}"

    @property
    def available(self) -> bool:
        """False while paused after a failure (the cache is off meanwhile)."""
        return not self._down or asyncio.get_running_loop().time() >= self._down_until

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """One call within REDIS_TIMEOUT; None when it failed (and the cache pauses)."""
        loop = asyncio.get_running_loop()
        try:
            with Deadline(loop, loop.time() + self.timeout):
                result = await call()
        except LockError:  # a RedisError, but about the lock, not about Redis
            raise
        except REDIS_ERRORS as exc:
            self._failed(op, exc, loop.time())
            return None
        if self._down:
            self._down, self._pause = False, self.min_pause
            log.info("cache_redis_recovered")
        return result

    def _failed(self, op: str, exc: BaseException, now: float) -> None:
        self.metrics.cache_redis_errors.inc()
        if not self._down:
            log.warning(
                "cache_redis_unavailable",
                op=op,
                error=repr(exc),
                message="the response cache is off until Redis answers again",
            )
            self._down = True
        else:
            self._pause = min(self._pause * 2, self.max_pause)
        self._down_until = now + self._pause

    # -- answers -------------------------------------------------------------------------------
    async def peek(self, digest: str) -> tuple[str | None, bool] | None:
        """(the stored answer or None, whether a leader holds the lock); None: Redis failed."""
        keys = [self.key(digest, "answer"), self.key(digest, "lock")]
        reply = await self._call("peek", lambda: self.client.mget(keys))
        if reply is None:
            return None
        return reply[0], reply[1] is not None

    async def put(self, digest: str, value: bytes) -> bool:
        key = self.key(digest, "answer")
        text = value.decode()
        done = await self._call("put", lambda: self.client.set(key, text, px=self.ttl_ms))
        return done is not None

    # -- the leader's lock ---------------------------------------------------------------------
    def lock(self, digest: str) -> Lock:
        return Lock(
            self.client,
            self.key(digest, "lock"),
            timeout=self.lease,
            blocking=False,
            thread_local=False,
        )

    async def acquire(self, lock: Lock) -> bool:
        return bool(await self._call("lock", lock.acquire))

    async def renew(self, lock: Lock) -> None:
        """Push the lease back while the leader runs (a lost holder stops renewing)."""
        try:
            await self._call("renew", lock.reacquire)
        except LockError:  # expired meanwhile: another replica may lead now
            return

    async def release(self, lock: Lock) -> None:
        try:
            await self._call("release", lock.release)
        except LockError:  # expired before we released it
            return
