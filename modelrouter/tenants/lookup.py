"""Virtual keys on the request path: a secret to its `Identity`, without the database once known.

- A secret is looked up by its SHA-256 in an in-process cache (hash -> entry, found or not).
  A fresh entry answers with no I/O at all; an entry is fresh for KEY_CACHE_SECONDS, the
  backstop for a change whose push was lost.
- A key once found is also found by the secret's BLAKE2s (`known`, every request's lookup):
  as one-way as the SHA-256 the database keeps, and half its cost in the standard library
  (OpenSSL's SHA-256 pays for its set-up on every call). The raw secret is never kept.
- A secret whose checksum fails is refused by arithmetic alone (`secrets.well_formed`).
- Lookups of well-formed secrets not in the cache are single-flighted (one query per hash at a
  time) and capped (`misses_per_second`, a token bucket per process): random secrets cannot
  drive the database at line rate. Over the cap, a 503 with Retry-After, not a 401: the secret
  may be a real key.
- Changes (`KeyChange`) drop the entries of their hashes; a revocation marks them revoked at
  once, with no query (`changed`). The Redis push (`tenants.push`) and, in one process, the
  store's `on_change` call it.
- With PostgreSQL unreachable, an entry past its freshness is used as last known; a secret
  never seen gets `KeysUnavailable` (a 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import blake2s
from typing import Final, Protocol

import structlog

from modelrouter.tenants.identity import Identity
from modelrouter.tenants.keys import Key
from modelrouter.tenants.secrets import PREFIX, hash_secret, well_formed
from modelrouter.tenants.store import DB_ERRORS, KeyChange

INF: Final = float("inf")
MAX_ENTRIES: Final = 100_000  # then the oldest half of the negative entries goes
VIRTUAL_PREFIX: Final = PREFIX.encode()
log = structlog.get_logger("modelrouter.tenants")


class KeyRefused(Exception):
    """The secret opens nothing: `reason` is for the metric and logs, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The key cannot be checked now (database away, or the lookup cap reached): retry."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Lookups(Protocol):
    async def lookup_by_hash(self, secret_hash: str) -> Key | None: ...

    async def any_key(self) -> bool: ...


class Entry:
    """What the cache knows of one secret hash."""

    __slots__ = ("fresh_until", "identity", "refusal", "valid_until")

    def __init__(
        self,
        identity: Identity | None,
        refusal: str | None,
        valid_until: float,
        fresh_until: float,
    ) -> None:
        self.identity = identity  # None with a refusal
        self.refusal = refusal  # why it is refused (unknown, revoked, ...) or None
        self.valid_until = valid_until  # wall clock: expiry, or the end of a rotation's grace
        self.fresh_until = fresh_until  # monotonic: re-read from the database after this


def entry_of(key: Key | None, secret_hash: str, fresh_until: float, now: float) -> Entry:
    if key is None:
        return Entry(None, "unknown", float("inf"), fresh_until)
    refusal = key.refusal(secret_hash, datetime.fromtimestamp(now, UTC))
    if refusal is not None:
        return Entry(None, refusal, float("inf"), fresh_until)
    ends = [key.expires_at] if key.expires_at is not None else []
    if secret_hash != key.secret_hash and key.previous_expires_at is not None:
        ends.append(key.previous_expires_at)  # the old secret of a rotation, in its grace
    valid_until = min((end.timestamp() for end in ends), default=float("inf"))
    return Entry(Identity(key.id, key), None, valid_until, fresh_until)


class Bucket:
    """A token bucket: `rate` a second, `burst` at once."""

    __slots__ = ("_at", "_burst", "_clock", "_level", "_rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._level = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._level = min(self._burst, self._level + (now - self._at) * self._rate)
        self._at = now
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False


class KeyResolver:
    def __init__(
        self,
        store: Lookups,
        *,
        ttl: float = 30.0,
        misses_per_second: float = 50.0,
        miss_burst: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._clock, self._wall = clock, wall
        self._entries: dict[str, Entry] = {}
        # The keys found, by their secret's BLAKE2s (`known`); and each one's, by its SHA-256,
        # so that a change drops it.
        self._found: dict[bytes, Entry] = {}
        self._found_as: dict[str, bytes] = {}
        self._flights: dict[str, asyncio.Task[Entry]] = {}
        self._misses = Bucket(misses_per_second, miss_burst, clock)
        self._any: bool | None = None  # whether a virtual key exists (None: not known yet)
        self._any_until = 0.0
        self._any_flight: asyncio.Task[None] | None = None
        self.queries = 0  # database lookups made (tests count them)

    # -- the request path ----------------------------------------------------------------------
    def known(self, secret: bytes) -> Identity | None:
        """The identity of a secret the cache vouches for now (fresh, and valid), with no
        coroutine: the request path's common case. None: ask `identity`."""
        entry = self._found.get(blake2s(secret).digest())
        if entry is None or entry.fresh_until <= self._clock():
            return None
        until = entry.valid_until
        if until != INF and until <= self._wall():
            return None
        return entry.identity

    async def identity(self, secret: bytes) -> Identity:
        """The identity of a virtual key's secret; KeyRefused or KeysUnavailable."""
        text = secret.decode("utf-8", "surrogateescape")
        secret_hash = hash_secret(text)
        entry = self._entries.get(secret_hash)
        if entry is None or entry.fresh_until <= self._clock():
            if not well_formed(text):
                raise KeyRefused("unknown")
            entry = await self._refresh(secret_hash, entry)
        if entry.identity is None:
            self._forget(secret_hash)
            raise KeyRefused(entry.refusal or "unknown")
        if entry.valid_until <= self._wall():
            raise KeyRefused("expired")
        if self._entries.get(secret_hash) is entry:  # not dropped by a change meanwhile
            fast = self._found_as[secret_hash] = blake2s(secret).digest()
            self._found[fast] = entry
        return entry.identity

    def _forget(self, secret_hash: str) -> None:
        fast = self._found_as.pop(secret_hash, None)
        if fast is not None:
            self._found.pop(fast, None)

    async def anyone_allowed(self) -> bool:
        """Whether a request without a key may pass (loopback, no API_KEY): only while no
        virtual key exists. Once one is seen, never again in this process. With the database
        away before any answer, it passes (as before virtual keys: loopback only)."""
        if self._any is True:
            return False
        if self._any_until <= self._clock():
            if self._any_flight is None:
                self._any_flight = asyncio.get_running_loop().create_task(self._ask_any())
            await asyncio.shield(self._any_flight)
        return not self._any

    async def _ask_any(self) -> None:
        try:
            self._any = await self.store.any_key() or bool(self._any)
            self._any_until = self._clock() + self.ttl
        except Exception as exc:  # noqa: BLE001 - any failure of the store: it is away
            self._failed(exc)
            self._any_until = self._clock() + min(self.ttl, 1.0)
        finally:
            self._any_flight = None

    # -- lookups -------------------------------------------------------------------------------
    async def _refresh(self, secret_hash: str, known: Entry | None) -> Entry:
        flight = self._flights.get(secret_hash)
        if flight is None:
            if known is None and not self._misses.take():
                raise KeysUnavailable("lookup_cap", retry_after=1.0)
            # A task of its own: a caller that goes away does not cancel the others' answer.
            flight = asyncio.get_running_loop().create_task(self._query(secret_hash, known))
            self._flights[secret_hash] = flight
            flight.add_done_callback(functools.partial(self._landed, secret_hash))
        return await asyncio.shield(flight)

    def _failed(self, exc: Exception) -> None:
        kind = "database" if isinstance(exc, DB_ERRORS) else type(exc).__name__
        log.warning("key_lookup_failed", error=kind, message="known keys work as last known")

    def _landed(self, secret_hash: str, flight: asyncio.Task[Entry]) -> None:
        self._flights.pop(secret_hash, None)
        if not flight.cancelled():
            flight.exception()  # retrieved: every caller may have gone

    async def _query(self, secret_hash: str, known: Entry | None) -> Entry:
        self.queries += 1
        try:
            key = await self.store.lookup_by_hash(secret_hash)
        except Exception as exc:  # noqa: BLE001 - any failure of the store: it is away
            self._failed(exc)
            if known is None:
                raise KeysUnavailable("database") from None
            known.fresh_until = self._clock() + min(self.ttl, 1.0)  # last known: retry soon
            return known
        entry = entry_of(key, secret_hash, self._clock() + self.ttl, self._wall())
        if len(self._entries) >= MAX_ENTRIES:
            self._shed()
        self._entries[secret_hash] = entry
        if key is not None:
            self._any = True
        return entry

    def _shed(self) -> None:
        """Bounded memory under random well-formed secrets: drop the entries of unknown ones."""
        for secret_hash in [h for h, e in self._entries.items() if e.refusal == "unknown"]:
            del self._entries[secret_hash]
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
            self._found.clear()
            self._found_as.clear()

    # -- changes -------------------------------------------------------------------------------
    def changed(self, change: KeyChange) -> None:
        """A key changed (here, or on another replica): its cached lookups are stale. A
        revoked key is refused from now on without asking the database."""
        if change.kind in ("created", "rotated"):
            self._any = True
        for secret_hash in change.hashes:
            self._forget(secret_hash)
            if change.kind == "revoked":
                self._entries[secret_hash] = Entry(None, "revoked", float("inf"), float("inf"))
            else:
                self._entries.pop(secret_hash, None)

    async def close(self) -> None:
        """End the lookups still in flight (at shutdown: nobody waits for them any more)."""
        tasks = [*self._flights.values(), *([self._any_flight] if self._any_flight else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stale(self) -> None:
        """Changes may have been missed (the push was lost): re-read every key at its next use,
        keeping what is known as the last known answer should the database be away."""
        for entry in self._entries.values():
            if entry.refusal != "revoked":
                entry.fresh_until = 0.0
        self._any_until = 0.0
