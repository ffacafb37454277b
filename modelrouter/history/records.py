"""One finished request as the history keeps it, and as `GET /v1/history` shows it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

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


# What PostgreSQL cannot hold, and what is stored instead: text never holds NUL (nor does
# jsonb hold its JSON escape), and a bigint holds 64 bits. A count past 2^63 (an upstream's
# garbage) is kept at the limit rather than costing the whole row.
NUL_STAND_IN: Final = "\ufffd"  # the Unicode replacement character
BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
_TEXT: Final = (
    "request_id", "client_id", "route", "provider", "model", "error_type", "cache", "answer",
)  # fmt: skip
_COUNTS: Final = ("prompt_tokens", "completion_tokens")
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


_decode_json = msgspec.json.Decoder().decode


def shown(row: Any) -> dict[str, Any]:
    """A database row as the API's JSON object (the client id is the caller's own: left out)."""
    out = {name: row[name] for name in COLUMNS if name not in ("client_id", "messages")}
    out["created_at"] = row["created_at"].isoformat(timespec="milliseconds")
    messages = row["messages"]
    out["messages"] = None if messages is None else _decode_json(messages)
    return out
