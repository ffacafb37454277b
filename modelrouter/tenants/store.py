"""The virtual keys in PostgreSQL: create (the secret is returned once), list in pages, get,
patch, revoke (the row stays, for history and spend), rotate (the old secret may keep working
for a grace period) and look up by a secret's hash.

Each change is one statement: it is written whole or not at all. After a change is committed,
`on_change` (when given) hears of it, with the secret hashes whose cached lookups are now
stale: that is where a deployment pushes changes to every replica. The schema is created or
migrated on first use, so nothing waits for the database at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets  # the standard library's (ours is modelrouter.tenants.secrets)
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import asyncpg
import msgspec
import structlog

from modelrouter.tenants.keys import Key, KeyPatch, NewKey
from modelrouter.tenants.rows import (
    ID_RE,
    columns,
    decode_cursor,
    encode_cursor,
    key_of,
    placeholder,
)
from modelrouter.tenants.schema import KEYS, NAME_CONSTRAINT, migrate
from modelrouter.tenants.secrets import hash_secret, new_secret

log = structlog.get_logger("modelrouter.tenants")
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
MAX_LIMIT: Final = 200


class NameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a key named {name!r} exists already (names stay taken after revocation)")


class KeyRevoked(Exception):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"key {key_id} is revoked: it cannot be rotated")


class BadKey(ValueError):
    """A request that is well formed but cannot apply (e.g. an expiry in the past)."""


ChangeKind = Literal["created", "updated", "revoked", "rotated"]


class KeyChange(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    kind: ChangeKind
    hashes: tuple[str, ...]  # secret hashes whose cached lookups (found or not) are stale


OnChange = Callable[[KeyChange], Awaitable[None]]


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


class KeyStore:
    def __init__(
        self, pool: Any, *, on_change: OnChange | None = None, timeout: float = 5.0
    ) -> None:
        self.pool = pool
        self.on_change = on_change
        self.timeout = timeout
        self._migrated = False
        self._migrating = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        dsn: str,
        *,
        pool_size: int = 2,
        timeout: float = 5.0,
        on_change: OnChange | None = None,
    ) -> KeyStore:
        """A store with its own pool (`start` it; min_size=0: nothing connects until used)."""
        pool = asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=pool_size,
            timeout=timeout,
            command_timeout=timeout,
            max_inactive_connection_lifetime=60.0,
        )
        return cls(pool, on_change=on_change, timeout=timeout)

    async def start(self) -> None:
        await self.pool

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), self.timeout)
        except TimeoutError:
            self.pool.terminate()

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, key_id: str) -> Key | None:
        if not ID_RE.fullmatch(key_id):  # not one of ours: no query
            return None
        return await self._one(f"SELECT * FROM {KEYS} WHERE id = $1", key_id)  # noqa: S608

    async def find(self, ref: str) -> Key | None:
        """A key by its id or, failing that, its name (for the command line)."""
        found = await self.get(ref)
        if found is None:
            found = await self._one(f"SELECT * FROM {KEYS} WHERE name = $1", ref)  # noqa: S608
        return found

    async def lookup_by_hash(self, secret_hash: str) -> Key | None:
        """The key whose current secret, or previous one (of the last rotation), has this hash;
        whether it may be used is `Key.refusal`'s answer."""
        return await self._one(
            f"SELECT * FROM {KEYS} WHERE secret_hash = $1 OR previous_hash = $1 LIMIT 1",  # noqa: S608
            secret_hash,
        )

    async def any_key(self) -> bool:
        """Whether any virtual key was ever created (then requests without one are refused)."""
        async with self._conn() as conn:
            return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {KEYS})"))  # noqa: S608

    async def page(
        self, *, limit: int, cursor: str | None = None, team: str | None = None
    ) -> tuple[list[Key], str | None]:
        """Keys newest first, `limit` at most, and the cursor of the next page (None: last)."""
        limit = max(1, min(limit, MAX_LIMIT))
        where: list[str] = []
        args: list[Any] = []
        if team is not None:
            args.append(team)
            where.append(f"team = ${len(args)}")
        if cursor is not None:
            args += list(decode_cursor(cursor))
            where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = (
            f"SELECT * FROM {KEYS}"  # noqa: S608 - placeholders only
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        keys = [key_of(row) for row in rows[:limit]]
        following = encode_cursor(keys[-1].created_at, keys[-1].id) if len(rows) > limit else None
        return keys, following

    # -- changes -------------------------------------------------------------------------------
    async def create(self, new: NewKey, *, now: datetime | None = None) -> tuple[Key, str]:
        """A new key and its secret (shown this once: only its hash is kept)."""
        if new.expires_at is not None and new.expires_at <= (now or datetime.now(UTC)):
            raise BadKey("`expires_at` is in the past")
        secret = new_secret()
        values = columns(msgspec.structs.asdict(new))
        values |= {"id": new_key_id(), "secret_hash": hash_secret(secret)}
        names = ", ".join(values)
        marks = ", ".join(placeholder(name, i) for i, name in enumerate(values, 1))
        key = await self._write(
            f"INSERT INTO {KEYS} ({names}) VALUES ({marks}) RETURNING *",  # noqa: S608
            *values.values(),
            name=new.name,
        )
        assert key is not None  # an INSERT ... RETURNING returns its row
        await self._changed(key, "created", key.secret_hash)
        return key, secret

    async def patch(self, key_id: str, patch: KeyPatch) -> Key | None:
        """The key with `patch` applied (None: no such key)."""
        changes = patch.changes()
        if not changes:
            raise BadKey("nothing to change: give at least one field")
        if not ID_RE.fullmatch(key_id):
            return None
        values = columns(changes)
        sets = ", ".join(f"{name} = {placeholder(name, i)}" for i, name in enumerate(values, 2))
        key = await self._write(
            f"UPDATE {KEYS} SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",  # noqa: S608
            key_id,
            *values.values(),
            name=changes.get("name"),
        )
        if key is not None:
            await self._changed(key, "updated", key.secret_hash, key.previous_hash)
        return key

    async def revoke(self, key_id: str) -> Key | None:
        """The key, revoked (again: its first revocation time stays). None: no such key."""
        if not ID_RE.fullmatch(key_id):
            return None
        key = await self._write(
            f"UPDATE {KEYS} SET revoked_at = coalesce(revoked_at, now()), updated_at = now()"  # noqa: S608
            " WHERE id = $1 RETURNING *",
            key_id,
        )
        if key is not None:
            await self._changed(key, "revoked", key.secret_hash, key.previous_hash)
        return key

    async def rotate(self, key_id: str, *, grace_seconds: int = 0) -> tuple[Key, str] | None:
        """A new secret for the key; the old one keeps working `grace_seconds` more (an older
        one still in its grace stops now). None: no such key; a revoked key is refused."""
        if not ID_RE.fullmatch(key_id):
            return None
        secret = new_secret()
        sql = (
            f"WITH old AS (SELECT secret_hash, previous_hash FROM {KEYS} WHERE id = $1 FOR UPDATE)"  # noqa: S608 - a constant
            f" UPDATE {KEYS} AS k SET"
            " previous_hash = CASE WHEN $2 > 0 THEN old.secret_hash END,"
            " previous_expires_at = CASE WHEN $2 > 0 THEN now() + make_interval(secs => $2) END,"
            " secret_hash = $3, updated_at = now()"
            " FROM old WHERE k.id = $1 AND k.revoked_at IS NULL"
            " RETURNING k.*, old.secret_hash AS old_hash, old.previous_hash AS older_hash"
        )
        async with self._conn() as conn:
            row = await conn.fetchrow(sql, key_id, float(grace_seconds), hash_secret(secret))
            if row is None:
                revoked = await conn.fetchval(
                    f"SELECT revoked_at IS NOT NULL FROM {KEYS} WHERE id = $1",  # noqa: S608
                    key_id,
                )
                if revoked:
                    raise KeyRevoked(key_id)
                return None
        key = key_of(row)
        await self._changed(key, "rotated", key.secret_hash, row["old_hash"], row["older_hash"])
        return key, secret

    # -- plumbing ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        async with self.pool.acquire(timeout=self.timeout) as conn:
            if not self._migrated:
                async with self._migrating:
                    if not self._migrated:
                        applied = await migrate(conn)
                        if applied:
                            log.info("keys_migrated", versions=applied)
                        self._migrated = True
            try:
                yield conn
            except asyncpg.UndefinedTableError:
                self._migrated = False  # a new, empty database: migrate again next time
                raise

    async def _one(self, sql: str, *args: Any) -> Key | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(sql, *args)
        return None if row is None else key_of(row)

    async def _write(self, sql: str, *args: Any, name: str | None = None) -> Key | None:
        try:
            return await self._one(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == NAME_CONSTRAINT and name is not None:
                raise NameTaken(name) from None
            raise

    async def _changed(self, key: Key, kind: ChangeKind, *hashes: str | None) -> None:
        if self.on_change is None:
            return
        change = KeyChange(
            key_id=key.id,
            kind=kind,
            hashes=tuple(dict.fromkeys(h for h in hashes if h)),
        )
        try:
            await self.on_change(change)
        except Exception as exc:  # noqa: BLE001 - written already: replicas catch up on their own
            log.warning(
                "key_change_not_pushed",
                key_id=key.id,
                kind=kind,
                error=repr(exc),
                message="replicas see the change after KEY_CACHE_SECONDS at most",
            )
