"""Frozen views of the actor side, for whoever reports on it (/health, /ready, metrics).

A view is a copy taken at one instant: reading it never touches an actor's state.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ProviderState = Literal["ok", "half_open", "blacklisted", "down"]


class ProviderView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: ProviderState
    blacklisted_until: float = 0.0  # wall clock (epoch seconds); 0 when not blacklisted
    failures: int = 0  # consecutive failures: the backoff level
    last_reason: str | None = None
    in_flight: int = 0  # attempts running now
    in_flight_elsewhere: int = 0  # on the other replicas, as last heard (routing/fleet.py)
    rate_limit: int = 0  # requests per minute (0: unlimited)
    budget_remaining: int | None = None  # of `rate_limit`, at its last admission
    restarts: int = 0  # times its supervisor restarted its loop
    mailbox_depth: int = 0
    idle_connections: int = 0  # upstream connections waiting in its pool


class SystemView(msgspec.Struct, frozen=True, kw_only=True):
    providers: tuple[ProviderView, ...]
    requests_in_flight: int  # routing tasks running (one per request being answered)
    requests_pending: int  # waiting for a routing slot
    state_backend: str  # memory, redis, or degraded (Redis away, local state)
    running: bool  # started and not closed
    draining: bool  # shutting down: finishing what runs, taking no new work soon
    cache: str = "off"  # the response cache: off, memory, redis, or degraded (Redis away)
    hedges: dict[str, int] | None = None  # outcome -> count since start; None: hedging off
