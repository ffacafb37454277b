"""The benchmarks' virtual key: a gateway with DATABASE_URL and ADMIN_API_KEY, and a key made
through its admin API with an rpm, a tpm and a budget that no run reaches, so each request pays
the whole admission (lookup in the cache, limits, budget reserve and settle) and is served."""

from __future__ import annotations

import http.client
import secrets
from typing import Final

import msgspec

ADMIN_KEY: Final = "bench-admin-key-0123456789"
STATIC_KEY: Final = "bench-static-key-0123456789"
# High enough that no run is refused: a limit that refuses would measure the refusals.
LIMITS: Final = {"rpm": 10_000_000, "tpm": 1_000_000_000_000, "budget_usd": 1_000_000.0}


def keyed_env(database_url: str) -> dict[str, str]:
    """A gateway's environment with virtual keys (and the history) in `database_url`."""
    return {"DATABASE_URL": database_url, "ADMIN_API_KEY": ADMIN_KEY}


def create_key(port: int, *, host: str = "127.0.0.1", timeout: float = 60.0) -> str:
    """Make a budgeted, limited key on the gateway at `port`; its secret."""
    body = {"name": f"bench-{secrets.token_hex(6)}", **LIMITS}
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/admin/keys",
            msgspec.json.encode(body),
            {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"},
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 201:
        raise RuntimeError(f"/admin/keys answered {response.status}: {data[:200]!r}")
    secret: str = msgspec.json.decode(data)["key"]
    return secret
