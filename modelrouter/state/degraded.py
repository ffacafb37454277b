"""Redis up or down: the switch to local state, the log line per transition, the reconnect loop.

The first failed or slow call flips the backend to its local fallback, so the requests queued
behind it never wait on Redis again; a background task owned here then reconnects with backoff
(tenacity) and calls `recover`, which resyncs and flips back with `restored()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from modelrouter.observability import Metrics

log = structlog.get_logger("modelrouter.state")


class Breaker:
    def __init__(
        self,
        *,
        metrics: Metrics,
        recover: Callable[[], Awaitable[None]],
        min_wait: float = 0.05,
        max_wait: float = 5.0,
    ) -> None:
        self.metrics = metrics
        self._recover = recover
        self._min_wait = min_wait
        self._max_wait = max_wait
        self._up: bool | None = None  # None: not connected yet
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.recoveries = 0

    @property
    def up(self) -> bool:
        return self._up is True

    def restored(self) -> None:
        """Redis answers again (or for the first time): shared state from now on."""
        if self._up is not True:
            log.info("redis_connected" if self._up is None else "redis_recovered")
            if self._up is False:
                self.recoveries += 1
        self._up = True
        self.metrics.set_state_backend("redis")

    def failed(self, op: str, exc: BaseException) -> None:
        """A call failed or timed out: count it; on the first one, go local and reconnect."""
        self.metrics.redis_errors.labels(op).inc()
        if self._up is not False:
            log.warning(
                "redis_unavailable",
                op=op,
                error=repr(exc),
                message="serving from local state until Redis answers again",
            )
            self._up = False
            self.metrics.set_state_backend("degraded")
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._reconnect(), name="redis-reconnect"
            )

    async def _reconnect(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self._min_wait, max=self._max_wait)
            + wait_random(0, self._min_wait),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.debug(
                "redis_reconnect_failed",
                attempt=state.attempt_number,
                error=repr(state.outcome.exception()) if state.outcome else None,
            ),
        )
        while True:
            async for attempt in retrying:
                with attempt:
                    await self._recover()
            if self.up:
                return
            await asyncio.sleep(self._min_wait)  # it failed again while resyncing

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
