"""A small actor: a bounded mailbox, `tell`, `ask` with a timeout, one loop that owns the state.

Failure rules (as in pykka):
- an error while handling an *ask* goes back to the asker, and the loop keeps running;
- an error while handling a *tell* crashes the loop, and whoever watches the actor (`on_crash`,
  its supervisor) decides whether to restart it; the message that crashed it is not redelivered;
- on stop, every ask waiting in the mailbox and the one being handled fail with `ActorStopped`.

Fast path: an ask to an idle actor (its loop parked on an empty mailbox) is handled in the
asker's task, still one message at a time (see `_ask_inline` for its one difference).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

M = TypeVar("M")


class MailboxFull(Exception):
    """The actor is saturated: the caller should answer 503 with Retry-After, not wait."""


class ActorStopped(Exception):
    """The actor is stopped (or was stopped while the message waited)."""


class Actor(Generic[M]):
    """Subclasses implement `handle` (and optionally `on_start`, which reloads state)."""

    def __init__(self, name: str, *, mailbox_size: int = 4096) -> None:
        self.name = name
        self.mailbox_size = mailbox_size
        self.restarts = 0
        self.on_crash: Callable[[Actor[M], BaseException], None] | None = None
        self._mailbox: deque[tuple[M, asyncio.Future[Any] | None]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._inline = False  # an ask is being handled in its asker's task (see `ask`)
        self._started: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stopped = False
        self.loop = asyncio.get_running_loop()
        self._started = self.loop.create_future()
        self._task = self.loop.create_task(self._run(), name=f"actor:{self.name}")
        self._task.add_done_callback(self._loop_ended)

    async def started(self) -> None:
        """Wait until `on_start` has run (its state is loaded), or the loop ended without."""
        if self._started is not None:
            await asyncio.shield(self._started)

    def restart(self) -> None:
        """Start a fresh loop after a crash; the mailbox (minus the crashing message) is kept."""
        self.restarts += 1
        self.start()

    async def stop(self) -> None:
        """Stop the loop; the ask it was handling and every waiting ask fail with ActorStopped."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.abandon()

    def abandon(self) -> None:
        """Refuse new messages and fail the waiting asks (the loop is gone for good)."""
        self._stopped = True
        while self._mailbox:
            _, future = self._mailbox.popleft()
            if future is not None and not future.done():
                future.set_exception(ActorStopped(self.name))

    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.loop or asyncio.get_running_loop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    # -- messaging ---------------------------------------------------------------------------
    def tell(self, message: M) -> None:
        """Post without waiting; raises MailboxFull at once when the mailbox is full."""
        if self._stopped:
            raise ActorStopped(self.name)
        if len(self._mailbox) >= self.mailbox_size:
            raise MailboxFull(self.name)
        self._post(message, None)

    def tell_system(self, message: M) -> None:
        """Post a message that must never be dropped (its count is bounded by its senders)."""
        self._post(message, None)

    async def ask(self, message: M, *, timeout: float = 5.0) -> Any:
        if self._stopped:
            raise ActorStopped(self.name)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done() and not self._inline:
            return await self._ask_inline(message)
        if len(self._mailbox) >= self.mailbox_size:
            raise MailboxFull(self.name)
        future: asyncio.Future[Any] = self._loop().create_future()
        self._post(message, future)
        async with asyncio.timeout(timeout):
            return await future

    async def _ask_inline(self, message: M) -> Any:
        """The loop is parked on an empty mailbox: handle the ask here, in the asker's task.

        One message at a time still holds: while this runs, new messages wait in the mailbox
        (the loop is not woken) and later asks take the mailbox; the loop resumes after. This
        saves two task switches per ask. It differs from a mailbox ask in one way: the asker's
        cancellation reaches the handler wherever it awaits, so a handler must not leave its
        state half-changed across an await (the provider's admission awaits only its rate
        decision, before it changes anything). A stop while it runs cannot cancel the asker's
        task: the handler finishes, its result is handed to `orphaned`, and the asker gets
        ActorStopped, as from the loop.
        """
        self._inline = True
        try:
            result = await self.handle(message)
        finally:
            self._inline = False
            if self._mailbox:
                self._wake()
        if self._stopped:
            self.orphaned(result)
            raise ActorStopped(self.name)
        return result

    def _post(self, message: M, future: asyncio.Future[Any] | None) -> None:
        self._mailbox.append((message, future))
        if not self._inline:
            self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # -- the loop ----------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Load state (again, after a restart). Runs inside the loop before any message."""

    async def handle(self, message: M) -> Any:
        raise NotImplementedError

    def orphaned(self, result: Any) -> None:
        """Called when an ask's result has nobody waiting for it any more (it gave up)."""

    async def _run(self) -> None:
        try:
            await self.on_start()
        finally:
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
        mailbox = self._mailbox
        loop = asyncio.get_running_loop()
        while True:
            while mailbox:
                message, future = mailbox.popleft()
                if future is None:
                    await self.handle(message)  # an error here crashes the actor
                    continue
                if future.done():
                    continue  # the asker gave up before we got to it
                await self._answer(message, future)
            self._wakeup = loop.create_future()
            await self._wakeup
            self._wakeup = None

    async def _answer(self, message: M, future: asyncio.Future[Any]) -> None:
        try:
            result = await self.handle(message)
        except Exception as exc:  # noqa: BLE001 - an ask's error belongs to the asker
            if not future.done():
                future.set_exception(exc)
            return
        finally:
            # Stopped while handling it (the loop's cancellation skips `except Exception`):
            # the asker still gets an answer.
            if not future.done() and self._stopped:
                future.set_exception(ActorStopped(self.name))
        if future.done():
            self.orphaned(result)
        else:
            future.set_result(result)

    def crash(self, exc: BaseException) -> None:
        """A synchronous step failed as a tell would: stop the loop and let whoever watches
        the actor decide (its supervisor restarts it, state reloaded by `on_start`)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # a cancelled loop reports no crash of its own (`_loop_ended`)
        if self.on_crash is not None and not self._stopped:
            self.on_crash(self, exc)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopped:
            return
        exc = task.exception()
        if exc is not None and self.on_crash is not None:
            self.on_crash(self, exc)
