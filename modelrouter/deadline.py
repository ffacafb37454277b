"""A deadline for the running task: `asyncio.timeout_at`, made cheaper.

It does the same thing (cancel the task when the time comes, turn that cancellation into
TimeoutError, let any other cancellation through) as a plain context manager with one timer
handle: no coroutine per enter and exit and no state machine. Entering and leaving one cost
2.2 us against 5.0 for `asyncio.timeout_at` (uvloop, 100,000 in a loop). Every upstream attempt
and every Redis call uses one, and a stream's is rescheduled after every read.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    __slots__ = ("_cancelling", "_handle", "_loop", "_task", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        task = asyncio.current_task(loop)  # with the loop given: no lookup of the running loop
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = loop.call_at(when, self._expire)

    def reschedule(self, when: float) -> None:
        if not self.expired:
            self._handle.cancel()
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
        self.expired = True
        self._task.cancel()
