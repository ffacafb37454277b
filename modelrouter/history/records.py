"""One finished request as the history keeps it, and as `GET /v1/history` shows it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

COLUMNS: Final = (
    "request_id",
    "created_at",
    "client_id",
    "route",
    "provider",
    "model",
    "attempts",
    "status",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttfb_ms",
    "cache",
    "messages",
    "answer",
    "cost_nanos",
    "usage_estimated",
    "hedge",
    "continued_from",
)


class Record(msgspec.Struct, array_like=True, frozen=True):
    """A row, in COLUMNS order (written as is by COPY). `messages` is JSON text."""

    request_id: str
    created_at: datetime
    client_id: str
    route: str
    provider: str | None
    model: str | None
    attempts: int
    status: int
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    ttfb_ms: float | None
    cache: str | None
    messages: str | None
    answer: str | None
    # The request's cost in nano-dollars (None: no provider answered), and whether its usage
    # was counted by the gateway (a stream cut before the provider said).
    cost_nanos: int | None = None
    usage_estimated: bool | None = None
    hedge: str | None = None  # a hedged stream's outcome: won, lost, skipped_cap
    continued_from: str | None = None  # a stream continued after a cut: who was cut


# What PostgreSQL cannot hold, and what is stored instead: text never holds NUL (nor does
# jsonb hold its JSON escape), and a bigint holds 64 bits. A count past 2^63 (an upstream's
# garbage) is kept at the limit rather than costing the whole row.
NUL_STAND_IN: Final = "\ufffd"  # the Unicode replacement character
BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
NANOS_PER_USD: Final = 1_000_000_000
_TEXT: Final = (
    "request_id", "client_id", "route", "provider", "model", "error_type", "cache", "answer",
    "hedge", "continued_from",
)  # fmt: skip
_COUNTS: Final = ("prompt_tokens", "completion_tokens", "cost_nanos")
# `\u0000` in JSON text, unless its backslash is itself escaped (`\\u0000` is text, not a NUL).
_JSON_NUL: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def storable(record: Record) -> Record:
    """`record` with what the database cannot hold replaced (the same object when nothing is:
    the usual case costs a few scans for a NUL byte)."""
    changes: dict[str, Any] = {}
    for name in _TEXT:
        value = getattr(record, name)
        if value is not None and "\x00" in value:
            changes[name] = value.replace("\x00", NUL_STAND_IN)
    if record.messages is not None and "\\u0000" in record.messages:
        changes["messages"] = _JSON_NUL.sub(r"\1\\ufffd", record.messages)
    for name in _COUNTS:
        value = getattr(record, name)
        if value is not None and not BIGINT_MIN <= value <= BIGINT_MAX:
            changes[name] = min(max(value, BIGINT_MIN), BIGINT_MAX)
    return msgspec.structs.replace(record, **changes) if changes else record


class HistoryRecord(msgspec.Struct, frozen=True):
    """A record as `GET /v1/history` shows it: its row without the client id (the caller's
    own), `created_at` in ISO 8601 with milliseconds and zone, and the messages as JSON."""

    request_id: str
    created_at: Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
    route: str
    provider: str | None
    model: str | None
    attempts: int
    status: int
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    ttfb_ms: float | None
    cache: str | None
    answer: str | None
    cost_usd: float | None  # the usage at the price table's prices; 0 for a cache hit
    usage_estimated: bool | None  # the usage was counted by the gateway, not the provider
    # Stored as jsonb and sent on as the database gives it (never decoded here).
    messages: (
        Annotated[
            msgspec.Raw,
            msgspec.Meta(
                extra_json_schema={"type": "array", "items": {"type": "object"}},
                description="The request's messages (null with HISTORY_STORE_CONTENT=false)",
            ),
        ]
        | None
    )
    hedge: str | None = None  # a hedged stream's outcome: won, lost or skipped_cap
    continued_from: str | None = None  # a stream continued after a cut: the deployment cut


def shown(row: Any) -> HistoryRecord:
    """A database row as the API shows it."""
    messages = row["messages"]
    return HistoryRecord(
        request_id=row["request_id"],
        created_at=row["created_at"].isoformat(timespec="milliseconds"),
        route=row["route"],
        provider=row["provider"],
        model=row["model"],
        attempts=row["attempts"],
        status=row["status"],
        error_type=row["error_type"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        latency_ms=row["latency_ms"],
        ttfb_ms=row["ttfb_ms"],
        cache=row["cache"],
        answer=row["answer"],
        cost_usd=None if row["cost_nanos"] is None else row["cost_nanos"] / NANOS_PER_USD,
        usage_estimated=row["usage_estimated"],
        messages=None if messages is None else msgspec.Raw(messages),
        hedge=row["hedge"],
        continued_from=row["continued_from"],
    )
