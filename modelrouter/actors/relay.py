"""A request's bounded event queue from its upstream job to its HTTP handler, and nothing else.

Chunks never pass through an actor mailbox: the job writes here, the handler drains everything
queued in one go (so one wake-up may carry several chunks). When the queue is full the writer
waits, which pushes back on the upstream read: a slow client never makes us buffer without bound.
Which provider answers travels in the queue too, as an `Answering` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelrouter.events import Answering, CacheStatus, Done, Event, Failed, Usage


class RelayFinished(RuntimeError):
    """A relay was ended twice: two writers think they own its end."""


class ClientGone(Exception):
    """The reader closed the relay (the client disconnected or the handler gave up)."""


class Relay:
    __slots__ = (
        "_closed",
        "_events",
        "_finished",
        "_loop",
        "_more_on_close",
        "_on_close",
        "_reader",
        "_writer",
        "eager",
        "maxsize",
    )

    def __init__(
        self,
        *,
        maxsize: int = 64,
        eager: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.maxsize = maxsize
        self._loop = loop  # given once, so no lookup per wait
        # A reader that wants the whole answer (`/chat`) sets eager=False: it is woken only by
        # the terminal event or a full queue, not once per chunk.
        self.eager = eager
        self._events: list[Event] = []
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._on_close: Callable[[], object] | None = None
        self._more_on_close: list[Callable[[], object]] | None = None  # rare: made when needed
        self._closed = False
        self._finished = False

    # -- writer side -------------------------------------------------------------------------
    async def put(self, event: Event) -> None:
        """Queue `event`, waiting while the queue is full."""
        while not self.offer(event):
            self._writer = (self._loop or asyncio.get_running_loop()).create_future()
            await self._writer

    def offer(self, event: Event) -> bool:
        """Queue `event` if there is room (True); False when full (then `await put(event)`).
        The writer's usual path: no coroutine per event."""
        if self._closed:
            raise ClientGone
        if len(self._events) >= self.maxsize:
            return False
        self._events.append(event)
        if self.eager or len(self._events) >= self.maxsize:
            self._wake_reader()
        return True

    def announce(self, event: Answering | CacheStatus) -> None:
        """Queue who answers next (or how the cache answers), without waking the reader: it
        reads it with the first event of that answer. Outside the bound (one per attempt, and
        attempts are bounded)."""
        if self._closed:
            raise ClientGone
        self._events.append(event)

    def finish(self, event: Done | Failed) -> None:
        """Queue the terminal event (never blocks; the bound excludes it). One owner writes
        it, once: a second end is a bug, and says so."""
        if self._finished:
            raise RelayFinished(f"already ended; {type(event).__name__} is a second end")
        self._finished = True
        self._events.append(event)
        self._wake_reader()

    def cancelled_with(self, usage: Usage | None) -> None:
        """The attempt writing here was cancelled with `usage` counted by its upstream so far
        (a hedge's loser: its relay keeps it, for the request's cost). Nothing to keep here."""

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run `callback` when the reader goes away before the end (it cancels the writer).
        Callbacks run in the order given (a relay handed on, e.g. by the cache to the router,
        keeps its first owner's callback)."""
        if self._closed:
            callback()
        elif self._on_close is None:
            self._on_close = callback
        elif self._more_on_close is None:
            self._more_on_close = [callback]
        else:
            self._more_on_close.append(callback)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reader side -------------------------------------------------------------------------
    async def take(self) -> list[Event]:
        """Wait for events and return all that are queued."""
        while not self._events:
            self._reader = (self._loop or asyncio.get_running_loop()).create_future()
            await self._reader
        events, self._events = self._events, []
        writer = self._writer
        if writer is not None and not writer.done():
            writer.set_result(None)
        return events

    def close(self) -> None:
        """The reader is gone; wake and stop the writer, cancel the job if it is not finished."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is not None and not writer.done():
            writer.set_result(None)
        callback, self._on_close = self._on_close, None
        if callback is not None and not self._finished:
            callback()
            for more in self._more_on_close or ():
                more()
        self._more_on_close = None

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
