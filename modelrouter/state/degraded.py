"""Redis up or down: the switch to local state, the log line per transition, the way back.

The first failed or slow call flips the backend to its local fallback, so the requests queued
behind it never wait on Redis again; a background task owned here then reconnects with backoff
(tenacity). Redis counts as back only when the keyed commands the limits use succeed (`probe`),
and keep succeeding for a hold time: a Cluster that answers PING while its slots still answer
CLUSTERDOWN cannot make the backend flap. A relapse soon after a recovery doubles the next hold.
Only then `restore` hands the local state over and the backend serves from Redis again.

The transition lines describe the process, not a request: they are written outside any request's
context (no request id), whichever request's call happened to notice the outage first.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis import exceptions as rx
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from modelrouter.observability import Metrics

log = structlog.get_logger("modelrouter.state")

Step = Callable[[], Awaitable[None]]

# Reply prefixes that name the cause better than the exception class does.
_REPLY_CAUSES = (
    ("CLUSTERDOWN", "clusterdown"),
    ("MASTERDOWN", "masterdown"),
    ("TRYAGAIN", "tryagain"),
    ("LOADING", "loading"),
    ("READONLY", "readonly"),
    ("NOAUTH", "auth"),
    ("WRONGPASS", "auth"),
    ("NOPERM", "auth"),
    ("OOM", "oom"),
)


# Exception types, most specific first, and the cause each one names.
_TYPE_CAUSES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (rx.ClusterDownError, "clusterdown"),
    ((TimeoutError, rx.TimeoutError), "timeout"),
    ((rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError), "auth"),
    (ConnectionRefusedError, "connection_refused"),
    ((ConnectionResetError, BrokenPipeError), "connection_closed"),
)
# Words in a message that name the cause when the type does not (redis-py wraps socket errors).
_TEXT_CAUSES = (
    ("Error 111 ", "connection_refused"),
    ("refused", "connection_refused"),
    ("closed by server", "connection_closed"),
    ("Connection lost", "connection_closed"),
    ("Connection reset", "connection_closed"),
    ("No master found", "no_master"),
)


def cause(exc: BaseException) -> str:
    """What went wrong, in one word a log reader can act on (never the message's secrets)."""
    reason = getattr(exc, "reason", None)  # a dropped connection's own cause
    if isinstance(reason, BaseException):
        return cause(reason)
    text = str(exc)
    padded = f" {text} "
    found = next((name for code, name in _REPLY_CAUSES if f" {code} " in padded), None)
    found = found or next((name for kind, name in _TYPE_CAUSES if isinstance(exc, kind)), None)
    found = found or next((name for word, name in _TEXT_CAUSES if word in text), None)
    if found is None:
        found = "connection" if isinstance(exc, rx.ConnectionError | OSError) else ""
    return found or type(exc).__name__


def outside_requests(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `call` in an empty context: no request's id is attached to what it logs."""
    return contextvars.Context().run(call, *args, **kwargs)


class Breaker:
    def __init__(
        self,
        *,
        metrics: Metrics,
        connect: Step,
        probe: Step,
        restore: Step,
        min_wait: float = 0.05,
        max_wait: float = 5.0,
        hold: float = 0.5,
        max_hold: float = 8.0,
        relapse_window: float = 60.0,
    ) -> None:
        self.metrics = metrics
        self._connect = connect  # (re)connect: scripts, subscription; raises while Redis is away
        self._probe = probe  # the limits' keyed commands; raises while they fail
        self._restore = restore  # hand the local state over; called once Redis is up again
        self._min_wait = min_wait
        self._max_wait = max_wait
        self._base_hold = self.hold = hold
        self._max_hold = max_hold
        self._relapse_window = relapse_window
        self._up: bool | None = None  # None: not connected yet
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._down_since = 0.0
        self._restored_at = -float("inf")
        self.recoveries = 0

    @property
    def up(self) -> bool:
        return self._up is True

    def restored(self) -> None:
        """Redis answers again (or for the first time): shared state from now on."""
        if self._up is not True:
            if self._up is None:
                outside_requests(log.info, "redis_connected")
            else:
                self.recoveries += 1
                outage = round(time.monotonic() - self._down_since, 3)
                outside_requests(log.info, "redis_recovered", outage_seconds=outage)
                self._restored_at = time.monotonic()
        self._up = True
        self.metrics.set_state_backend("redis")

    def failed(self, op: str, exc: BaseException) -> bool:
        """A call failed or timed out: count it; on the first one, go local and reconnect.
        True when this call switched the backend to local state."""
        self.metrics.redis_errors.labels(op).inc()
        switched = self._up is not False
        if switched:
            now = time.monotonic()
            relapse = now - self._restored_at < self._relapse_window
            self.hold = min(self.hold * 2, self._max_hold) if relapse else self._base_hold
            self._down_since = now
            outside_requests(
                log.warning,
                "redis_unavailable",
                op=op,
                cause=cause(exc),
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                message="serving from local state until Redis answers again",
            )
            self._up = False
            self.metrics.set_state_backend("degraded")
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._reconnect(), name="redis-reconnect", context=contextvars.Context()
            )
        return switched

    async def _reconnect(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self._min_wait, max=self._max_wait)
            + wait_random(0, self._min_wait),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.debug(
                "redis_reconnect_failed",
                attempt=state.attempt_number,
                cause=cause(state.outcome.exception()) if state.outcome else None,  # type: ignore[arg-type]
            ),
        )
        while not self.up:
            async for attempt in retrying:
                with attempt:
                    await self._connect()
                    await self._probe()
                    await self._held()
            await self._restore()  # it may fail again while handing over: then loop

    async def _held(self) -> None:
        """The probe keeps succeeding for the hold time (raises as soon as it does not)."""
        end = time.monotonic() + self.hold
        step = max(self.hold / 5, 0.01)
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(step, left))
            await self._probe()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
