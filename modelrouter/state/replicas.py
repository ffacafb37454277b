"""Figures the replicas share through Redis, one field per replica in a hash, each written by a
task of its replica every few seconds, off the request path (`routing/fleet.py`: routing's
inputs; `observability/recent_fleet.py`: the console's charts and errors).

What the two share lives here: a replica's id (its field's name), the periodic task, the
deletion of the fields of replicas gone silent (a reader ignores a field older than its limit:
a replica that died or lost Redis), and Redis being away logged once per outage. Each writer
sets its hash's TTL to that limit, so a hash nobody writes expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any


def replica_id() -> str:
    """This process, unique in the fleet: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Every:
    """Awaits `work` every `seconds` in a task of its own, from `start` until `stop`. `work`
    handles Redis failing itself: anything it lets through ends the task."""

    __slots__ = ("_name", "_task", "seconds", "work")

    def __init__(self, work: Callable[[], Awaitable[None]], seconds: float, *, name: str) -> None:
        self.work = work
        self.seconds = seconds
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self.work()
            await asyncio.sleep(self.seconds)


class Outage:
    """Whether Redis answered last: losing it is logged once (`lost`, a warning), its return
    once (`restored`), however many calls fail or succeed in between."""

    __slots__ = ("_log", "_lost", "_restored", "up")

    def __init__(self, log: Any, *, lost: str, restored: str) -> None:
        self._log = log
        self._lost = lost
        self._restored = restored
        self.up = True

    def failed(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._log.warning(self._lost, error=type(exc).__name__)

    def answered(self) -> None:
        if not self.up:
            self.up = True
            self._log.info(self._restored)


async def forget(client: Any, stale: Iterable[tuple[str, Sequence[str]]]) -> None:
    """Delete the stale fields, `(key, fields)` pairs, in one round trip; if Redis fails, the
    next reader finds them stale again and tries again."""
    with contextlib.suppress(Exception):
        pipe = client.pipeline(transaction=False)
        for key, fields in stale:
            pipe.hdel(key, *fields)
        await pipe.execute()
