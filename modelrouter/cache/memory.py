"""The in-process store: an LRU of answers within a byte budget, each kept for the TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from modelrouter.events import Event
from modelrouter.observability import Metrics


class MemoryStore:
    def __init__(
        self,
        metrics: Metrics,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.bytes = 0
        # key -> (events, size, expiry)
        self._entries: OrderedDict[str, tuple[list[Event], int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[Event] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[2] <= self.clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, events: list[Event], size: int) -> None:
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        while self.bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.metrics.cache_evictions.inc()
        self._entries[key] = (events, size, self.clock() + self.ttl)
        self.bytes += size
        self.metrics.cache_bytes.set(self.bytes)

    def _remove(self, key: str) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size
        self.metrics.cache_bytes.set(self.bytes)
