"""Messages between the router and the provider actors, and what the system is asked to route.

Messages are frozen and carry no live objects of the actor side (no actor, no task). A request's
`Relay` travels with it: it is where the attempt writes the answer, the reply channel.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from modelrouter.actors.relay import Relay
from modelrouter.events import FailureReason, Usage
from modelrouter.schemas import ChatRequest
from modelrouter.state import HealthRecord

Rejection = Literal["blacklisted", "half_open", "rate_limited", "saturated", "down"]


class Route(msgspec.Struct, frozen=True):
    """What the system routes: answer this request into `relay` before `deadline` (loop time)."""

    request: ChatRequest
    relay: Relay
    deadline: float
    stream: bool
    request_id: str
    allow: tuple[str, ...] = ()  # the key's model allow-list (patterns); empty: all


class Attempt(msgspec.Struct, frozen=True):
    """router -> provider: admit one attempt and, if admitted, run it (in the router's task)."""

    request: ChatRequest
    model: str
    relay: Relay
    stream: bool
    deadline: float
    request_id: str
    number: int = 1  # the request's attempt count, this one included
    force: bool = False  # every provider is out: try this one despite its blacklist


class AttemptResult(msgspec.Struct, frozen=True):
    ok: bool
    reason: FailureReason | None = None
    message: str = ""
    status: int | None = None  # the upstream's status, when it sent one
    retry_after: float | None = None
    cut_by_deadline: bool = False
    finish_reason: str | None = None
    emitted: bool = False  # text or a tool call reached the relay: no fallback after this
    usage: Usage | None = None  # what a successful attempt's upstream counted (for its span)
    # A timed success's seconds from the request written to its first event (a stream) or to
    # the response head (a whole answer): the `latency` strategy's measure.
    first_byte: float | None = None


class Admission(msgspec.Struct, frozen=True):
    """provider -> router: the attempt was not admitted, and why."""

    rejection: Rejection
    retry_after: float = 0.0


class HealthChanged(msgspec.Struct, frozen=True):
    """shared state -> provider (system message): another replica changed this provider's health."""

    record: HealthRecord
