"""Spend rows that PostgreSQL could not take, kept in Redis until it can (REDIS_URL set).

- `<prefix>:{spend}:spool:v1`: a list of rows (msgspec JSON), appended at its tail by any
  replica (`spill`), taken from its head by one drainer at a time.
- `<prefix>:{spend}:drain:v1`: the drainer's lock (a token, a short lease). The head of the
  list is removed only by the lock's holder, in a script that checks the token first: a
  drainer whose lease ran out while PostgreSQL was slow removes nothing, and the next one
  writes those rows again (once: each row keeps its id, `ON CONFLICT DO NOTHING`).

The hash tag puts both keys on one slot (Redis Cluster). A spill that would take the list past
`max_rows` is refused whole: its rows stay where they were (Redis' memory is not the outage's
buffer of last resort). Every call is bounded by the client's REDIS_TIMEOUT.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from redis.exceptions import RedisClusterException, RedisError

REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)
VERSION: Final = "v1"

# Append ARGV[2..] unless the list would pass ARGV[1] rows; the new length, or -1 (refused).
_SPILL: Final = """
local n = redis.call('LLEN', KEYS[1])
if n + #ARGV - 1 > tonumber(ARGV[1]) then return -1 end
return redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
"""
# The lock's holder (ARGV[1]) removes the first ARGV[2] rows and renews its lease (ARGV[3] ms).
_TRIM: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""
_UNLOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SpendSpool:
    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "mr",
        max_rows: int = 1_000_000,
        lease: float = 30.0,
    ) -> None:
        """`lease`: how long a drainer may hold the lock without a batch done (seconds)."""
        self.client = client
        self.max_rows = max_rows
        self.lease_ms = max(1, int(lease * 1000))
        self.key = f"{prefix}:{{spend}}:spool:{VERSION}"
        self.lock_key = f"{prefix}:{{spend}}:drain:{VERSION}"
        self._spill = client.register_script(_SPILL)
        self._trim = client.register_script(_TRIM)
        self._unlock = client.register_script(_UNLOCK)

    async def close(self) -> None:
        await self.client.aclose()

    # -- any replica -------------------------------------------------------------------------
    async def spill(self, rows: list[bytes]) -> bool:
        """Append `rows` (encoded); False when the spool is full (nothing appended)."""
        if not rows:
            return True
        found = await self._spill(keys=[self.key], args=[self.max_rows, *rows])
        return int(found) >= 0

    async def length(self) -> int:
        return int(await self.client.llen(self.key))

    # -- the drainer -------------------------------------------------------------------------
    async def lock(self) -> str | None:
        """A token when this caller now holds the drainer's lock, else None."""
        token = secrets.token_hex(8)
        taken = await self.client.set(self.lock_key, token, nx=True, px=self.lease_ms)
        return token if taken else None

    async def head(self, count: int) -> list[str]:
        """The first `count` rows, left in place."""
        found: list[str] = await self.client.lrange(self.key, 0, count - 1)
        return found

    async def remove_head(self, token: str, count: int) -> bool:
        """Remove the first `count` rows if `token` still holds the lock (its lease renewed);
        False when it does not (nothing removed)."""
        done = await self._trim(keys=[self.key, self.lock_key], args=[token, count, self.lease_ms])
        return bool(done)

    async def unlock(self, token: str) -> None:
        await self._unlock(keys=[self.lock_key], args=[token])
