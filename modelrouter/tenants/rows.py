"""Between `Key` and the keys table: column values, rows, and the listing's cursor."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any, Final

import msgspec

from modelrouter.tenants.keys import Key, nanos_to_decimal, usd_to_nanos

ID_RE: Final = re.compile(r"key_[0-9a-f]{16}")
_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(dict[str, Any]).decode


class BadCursor(ValueError):
    pass


def columns(fields: dict[str, Any]) -> dict[str, Any]:
    """Struct fields as column values (the names are the struct's own, never a client's)."""
    columns = dict(fields)
    if "budget_usd" in columns:
        usd = columns["budget_usd"]
        columns["budget_usd"] = None if usd is None else nanos_to_decimal(usd_to_nanos(usd))
    if "metadata" in columns:
        columns["metadata"] = _encode(columns["metadata"]).decode()
    return columns


def placeholder(name: str, index: int) -> str:
    return f"${index}::jsonb" if name == "metadata" else f"${index}"


def key_of(row: Any) -> Key:
    budget = row["budget_usd"]
    return Key(
        id=row["id"],
        name=row["name"],
        team=row["team"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        models=tuple(row["models"]),
        rpm=row["rpm"],
        tpm=row["tpm"],
        max_parallel_streams=row["max_parallel_streams"],
        budget_nanos=None if budget is None else int(budget.scaleb(9)),
        budget_period=row["budget_period"],
        metadata=_decode_metadata(row["metadata"]),
        disabled=row["disabled"],
        revoked_at=row["revoked_at"],
        secret_hash=row["secret_hash"],
        previous_hash=row["previous_hash"],
        previous_expires_at=row["previous_expires_at"],
    )


def encode_cursor(created_at: datetime, key_id: str) -> str:
    raw = f"{created_at.isoformat()}|{key_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, key_id = raw.partition("|")
        created_at = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("cursor is not one this server gave") from None
    if created_at.tzinfo is None or not ID_RE.fullmatch(key_id):
        raise BadCursor("cursor is not one this server gave")
    return created_at, key_id
