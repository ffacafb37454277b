"""Helpers the key tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelrouter.tenants import Key


def make_key(**fields: Any) -> Key:
    """A key made now, active, with no limits, budget or expiry but for what `fields` set."""
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "id": "key_0123456789abcdef",
        "name": "k",
        "team": None,
        "created_at": now,
        "updated_at": now,
        "expires_at": None,
        "models": (),
        "rpm": None,
        "tpm": None,
        "max_parallel_streams": None,
        "budget_nanos": None,
        "budget_period": "total",
        "metadata": {},
        "disabled": False,
        "revoked_at": None,
        "secret_hash": "0" * 64,
        "previous_hash": None,
        "previous_expires_at": None,
    }
    return Key(**(base | fields))
