"""Per-app state of the mock provider: defaults, fault-spec cache, counters, recent requests."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from modelrouter.mock.faults import Faults, parse_spec

RECORDED_HEADERS = (
    "X-Request-ID",
    "Authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "api-key",
    "x-goog-api-key",
    "traceparent",  # the gateway's attempt span, when it traces
)
RECENT_LIMIT = 100
_SPEC_CACHE_LIMIT = 1024


class MockState:
    """Mutable state shared by the handlers of one mock app (single event loop, no locks)."""

    __slots__ = ("_specs", "defaults", "open_streams", "recent", "requests", "stopping")

    def __init__(self, defaults: Faults) -> None:
        self.defaults = defaults
        self.requests: dict[str, int] = {}
        self.open_streams = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_LIMIT)
        self.stopping = False
        self._specs: dict[str, Faults] = {}

    def faults(self, spec: str | None) -> Faults:
        """The faults of a request: the defaults, overridden by its ``/x/<spec>`` prefix.

        Raises ``ValueError`` for a bad spec.
        """
        if spec is None:
            return self.defaults
        faults = self._specs.get(spec)
        if faults is None:
            faults = parse_spec(spec, self.defaults)
            if len(self._specs) < _SPEC_CACHE_LIMIT:
                self._specs[spec] = faults
        return faults

    def count(self, prefix: str) -> int:
        """Count one chat request on `prefix`; returns how many it has seen, this one included."""
        seen = self.requests[prefix] = self.requests.get(prefix, 0) + 1
        return seen

    def record(self, path: str, headers: Mapping[str, str], body: Any) -> None:
        """Remember what a chat request carried (bounded to the last ``RECENT_LIMIT``)."""
        kept = {name: headers[name] for name in RECORDED_HEADERS if name in headers}
        self.recent.append({"path": path, "headers": kept, "body": body})

    def stats(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "open_streams": self.open_streams}

    def reset(self) -> None:
        """Zero the counters and forget recorded requests; streams in flight stay counted."""
        self.requests.clear()
        self.recent.clear()
