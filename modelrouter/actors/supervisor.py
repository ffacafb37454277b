"""One-for-one supervision: a crashed child is restarted, at most `max_restarts` in `within` s."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from modelrouter.actors.base import Actor

log = structlog.get_logger("modelrouter.supervisor")


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int = 5,
        within: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_restart: Callable[[Actor[Any]], None] | None = None,
        on_give_up: Callable[[Actor[Any]], None] | None = None,
    ) -> None:
        self.max_restarts = max_restarts
        self.within = within
        self._clock = clock
        self._on_restart = on_restart
        self._on_give_up = on_give_up
        self._history: dict[str, deque[float]] = {}
        self.children: list[Actor[Any]] = []

    def watch(self, child: Actor[Any]) -> None:
        self.children.append(child)
        child.on_crash = self._crashed

    def forget(self, child: Actor[Any]) -> None:
        """Stop supervising `child` (a deployment a reload removed)."""
        if child in self.children:
            self.children.remove(child)
        child.on_crash = None
        self._history.pop(child.name, None)

    def _crashed(self, child: Actor[Any], exc: BaseException) -> None:
        now = self._clock()
        history = self._history.setdefault(child.name, deque())
        while history and now - history[0] > self.within:
            history.popleft()
        if len(history) >= self.max_restarts:
            log.error("actor_given_up", actor=child.name, error=repr(exc), restarts=len(history))
            child.abandon()
            if self._on_give_up is not None:
                self._on_give_up(child)
            return
        history.append(now)
        log.warning("actor_restarted", actor=child.name, error=repr(exc), restarts=len(history))
        child.restart()
        if self._on_restart is not None:
            self._on_restart(child)
