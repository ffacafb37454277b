"""A deadline for the running task: what `asyncio.timeout_at` does, as a plain context manager.

It cancels the task when the time comes, turns that cancellation into TimeoutError, and lets
any other cancellation through. It exists because it is used on the hottest paths (every
upstream attempt, every Redis call, pushed back after every read of a stream) and costs a
fraction of `asyncio.timeout_at` there (docs/performance.md); tests/test_deadline.py holds it
to the same behaviour.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

TIMER_RESOLUTION = 0.001  # uvloop's timers (libuv) fire to the millisecond


class Deadline:
    __slots__ = ("_armed", "_cancelling", "_handle", "_loop", "_task", "expired", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        task = asyncio.current_task(loop)  # with the loop given: no lookup of the running loop
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self.when = self._armed = when
        self._handle = loop.call_at(when, self._expire)

    def reschedule(self, when: float) -> None:
        """Move the deadline. Later is only noted (the timer, when it fires, waits on to the new
        time): a stream pushes its deadline back after every read, where re-arming a timer
        each time would cost more than the read. Earlier re-arms the timer."""
        if self.expired:
            return
        self.when = when
        if when < self._armed:
            self._arm(when)

    def _arm(self, when: float) -> None:
        self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._expire)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        if self.when - self._loop.time() > TIMER_RESOLUTION:  # pushed back since it was armed
            self._arm(self.when)
            return
        self.expired = True
        self._task.cancel()
