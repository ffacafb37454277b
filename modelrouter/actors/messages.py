"""Messages between the HTTP front, the router supervisor and the provider actors."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec

from modelrouter.actors.relay import Relay
from modelrouter.events import FailureReason
from modelrouter.schemas import ChatRequest
from modelrouter.state import HealthRecord

Rejection = Literal["blacklisted", "half_open", "rate_limited", "saturated", "down"]


class Route(msgspec.Struct, frozen=True):
    """web -> router: answer this request into `relay` before `deadline` (loop time)."""

    request: ChatRequest
    relay: Relay
    deadline: float
    stream: bool
    request_id: str


class Attempt(msgspec.Struct, frozen=True):
    """router -> provider (ask): admit one attempt and, if admitted, start its upstream job."""

    request: ChatRequest
    model: str
    relay: Relay
    stream: bool
    deadline: float
    request_id: str
    force: bool = False  # every provider is out: try this one despite its blacklist


class AttemptResult(msgspec.Struct, frozen=True):
    ok: bool
    reason: FailureReason | None = None
    message: str = ""
    status: int | None = None  # the upstream's status, when it sent one
    retry_after: float | None = None
    cut_by_deadline: bool = False
    finish_reason: str | None = None


class Admission(msgspec.Struct, frozen=True):
    """provider -> router: `result` resolves when the attempt ends; None when rejected."""

    rejection: Rejection | None = None
    retry_after: float = 0.0
    result: asyncio.Future[AttemptResult] | None = None
    job: Any = None  # the aiojobs Job, closed by the router when the client goes away


class Outcome(msgspec.Struct, frozen=True):
    """upstream job -> its provider actor (system message): the attempt ended."""

    ticket: int
    result: AttemptResult | None  # None: cancelled (client gone), says nothing about health


class HealthChanged(msgspec.Struct, frozen=True):
    """shared state -> provider (system message): another replica changed this provider's health."""

    record: HealthRecord
