"""One finished request as the history keeps it, and as `GET /v1/history` shows it."""

from __future__ import annotations

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


_decode_json = msgspec.json.Decoder().decode


def shown(row: Any) -> dict[str, Any]:
    """A database row as the API's JSON object (the client id is the caller's own: left out)."""
    out = {name: row[name] for name in COLUMNS if name not in ("client_id", "messages")}
    out["created_at"] = row["created_at"].isoformat(timespec="milliseconds")
    messages = row["messages"]
    out["messages"] = None if messages is None else _decode_json(messages)
    return out
