"""The key resolver against the real PostgreSQL: a known key costs no query; a malformed secret
none at all; unknown well-formed secrets are single-flighted and capped; a change drops the
cached answer (a revocation refuses at once, with no query); with the database away a known key
works as last known and an unknown one is `KeysUnavailable`, never a refusal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from modelrouter.tenants import (
    Key,
    KeyChange,
    KeyPatch,
    KeyStore,
    NewKey,
    hash_secret,
    new_secret,
)
from modelrouter.tenants.lookup import KeyRefused, KeyResolver, KeysUnavailable
from tests.tenants.conftest import SERVER


class Counted:
    """The store, its lookups counted; `gate` (when set) holds each lookup until opened."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.lookups = 0
        self.gate: asyncio.Event | None = None

    async def lookup_by_hash(self, secret_hash: str) -> Key | None:
        self.lookups += 1
        if self.gate is not None:
            await self.gate.wait()
        return await self.store.lookup_by_hash(secret_hash)

    async def any_key(self) -> bool:
        return await self.store.any_key()


@pytest.fixture
def counted(store: KeyStore) -> Counted:
    return Counted(store)


def new(name: str = "k", **fields: Any) -> NewKey:
    return msgspec.convert({"name": name, **fields}, NewKey)


async def cut_off(url: str) -> None:
    """The database stops taking connections, and its open ones are ended."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await conn.close()


async def test_a_known_key_costs_one_query_then_none(counted: Counted) -> None:
    key, secret = await counted.store.create(new())
    resolver = KeyResolver(counted)
    for _ in range(50):
        identity = await resolver.identity(secret.encode())
        assert identity.client_id == key.id
        assert identity.key == key
    assert counted.lookups == 1


async def test_a_malformed_secret_is_refused_without_a_query(counted: Counted) -> None:
    resolver = KeyResolver(counted)
    good = new_secret()
    typo = good[:-1] + ("A" if good[-1] != "A" else "B")  # the checksum no longer matches
    for secret in (typo, "mr-short", good[:-3]):
        with pytest.raises(KeyRefused) as refused:
            await resolver.identity(secret.encode())
        assert refused.value.reason == "unknown"
    assert counted.lookups == 0


async def test_lookups_of_one_unknown_secret_are_single_flighted(counted: Counted) -> None:
    resolver = KeyResolver(counted)
    counted.gate = asyncio.Event()
    secret = new_secret().encode()
    waiting = [asyncio.create_task(resolver.identity(secret)) for _ in range(20)]
    await asyncio.sleep(0)  # every caller reaches the flight before it lands
    counted.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, KeyRefused) and r.reason == "unknown" for r in results)
    assert counted.lookups == 1
    with pytest.raises(KeyRefused):  # and the answer is kept: no second query
        await resolver.identity(secret)
    assert counted.lookups == 1


async def test_random_secrets_cannot_reach_the_database_at_line_rate(counted: Counted) -> None:
    frozen = 0.0  # no time passes: the bucket holds its burst and nothing more
    resolver = KeyResolver(counted, misses_per_second=1.0, miss_burst=5.0, clock=lambda: frozen)
    outcomes: list[str] = []
    for _ in range(50):
        try:
            await resolver.identity(new_secret().encode())
        except KeyRefused:
            outcomes.append("refused")
        except KeysUnavailable as exc:
            outcomes.append(exc.reason)
    assert counted.lookups == 5  # the burst, then none: not one query per secret
    assert outcomes == ["refused"] * 5 + ["lookup_cap"] * 45


async def test_a_revocation_refuses_at_once_without_a_query(counted: Counted) -> None:
    key, secret = await counted.store.create(new())
    resolver = KeyResolver(counted)
    await resolver.identity(secret.encode())
    resolver.changed(KeyChange(key_id=key.id, kind="revoked", hashes=(hash_secret(secret),)))
    with pytest.raises(KeyRefused) as refused:
        await resolver.identity(secret.encode())
    assert refused.value.reason == "revoked"
    assert counted.lookups == 1


async def test_an_edit_is_read_again_at_the_next_use(counted: Counted) -> None:
    key, secret = await counted.store.create(new())
    resolver = KeyResolver(counted)
    await resolver.identity(secret.encode())
    store = counted.store
    store.on_change = None
    patched = await store.patch(key.id, KeyPatch(disabled=True))
    assert patched is not None
    await resolver.identity(secret.encode())  # the change not heard yet: the cached answer
    resolver.changed(KeyChange(key_id=key.id, kind="updated", hashes=(hash_secret(secret),)))
    with pytest.raises(KeyRefused) as refused:
        await resolver.identity(secret.encode())
    assert refused.value.reason == "disabled"
    assert counted.lookups == 2


async def test_an_expiry_is_kept_without_asking_again(counted: Counted) -> None:
    now = datetime.now(UTC)
    _, secret = await counted.store.create(new(expires_at=(now + timedelta(hours=1)).isoformat()))
    clock = [now.timestamp()]
    resolver = KeyResolver(counted, wall=lambda: clock[0])
    await resolver.identity(secret.encode())
    clock[0] += 3601
    with pytest.raises(KeyRefused) as refused:
        await resolver.identity(secret.encode())
    assert refused.value.reason == "expired"
    assert counted.lookups == 1


async def test_with_the_database_away_known_keys_work_and_unknown_ones_wait(
    counted: Counted, database: str
) -> None:
    key, secret = await counted.store.create(new())
    resolver = KeyResolver(counted)
    await resolver.identity(secret.encode())
    await cut_off(database)
    resolver.stale()  # as after KEY_CACHE_SECONDS, or a lost push: asks the database again
    identity = await resolver.identity(secret.encode())  # the last known answer
    assert identity.client_id == key.id
    with pytest.raises(KeysUnavailable) as unavailable:
        await resolver.identity(new_secret().encode())
    assert unavailable.value.reason == "database"


async def test_with_no_database_at_all_an_unknown_key_is_unavailable_not_refused() -> None:
    store = KeyStore.from_url("postgresql://postgres@127.0.0.1:1/nothing", timeout=1.0)
    await store.start()
    try:
        resolver = KeyResolver(store)
        with pytest.raises(KeysUnavailable):
            await resolver.identity(new_secret().encode())
        assert await resolver.anyone_allowed()  # loopback without API_KEY: as before keys
    finally:
        await store.close()


async def test_closing_ends_the_lookups_in_flight(counted: Counted) -> None:
    resolver = KeyResolver(counted)
    counted.gate = asyncio.Event()  # never opened: the lookup would wait for ever
    waiting = asyncio.create_task(resolver.identity(new_secret().encode()))
    await asyncio.sleep(0)  # the caller starts the flight and waits on it
    await resolver.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_known_answers_only_what_identity_would_answer_from_the_cache(
    counted: Counted,
) -> None:
    """The request path's synchronous lookup: the cached identity while fresh and valid, else
    None (the caller then awaits `identity`, which refuses or asks the database)."""
    now = datetime.now(UTC)
    expiring = new("e", expires_at=(now + timedelta(hours=1)).isoformat())
    key, secret = await counted.store.create(expiring)
    other, other_secret = await counted.store.create(new("o"))
    wall, clock = [now.timestamp()], [0.0]
    resolver = KeyResolver(counted, ttl=30.0, wall=lambda: wall[0], clock=lambda: clock[0])
    assert resolver.known(secret.encode()) is None  # never looked up
    await resolver.identity(secret.encode())
    await resolver.identity(other_secret.encode())
    found = resolver.known(secret.encode())
    assert found is not None
    assert found.key == key
    assert resolver.known(b"mr-" + b"x" * 49) is None
    clock[0] += 31  # past KEY_CACHE_SECONDS: to be read again
    assert resolver.known(secret.encode()) is None
    await resolver.identity(secret.encode())
    assert resolver.known(secret.encode()) is not None
    wall[0] += 3601  # expired: identity refuses it
    assert resolver.known(secret.encode()) is None
    resolver.changed(
        KeyChange(key_id=other.id, kind="revoked", hashes=(hash_secret(other_secret),))
    )
    assert resolver.known(other_secret.encode()) is None
    assert counted.lookups == 3


async def test_known_forgets_a_key_on_any_change_and_keeps_no_secret(counted: Counted) -> None:
    """`known` finds a key by its secret's BLAKE2s: an update (or a rotation) of the key drops
    that too, so the next request reads the key again; neither map holds the secret."""
    key, secret = await counted.store.create(new("k"))
    resolver = KeyResolver(counted, ttl=30.0)
    await resolver.identity(secret.encode())
    assert resolver.known(secret.encode()) is not None
    held = [*resolver._found, *resolver._found_as, *resolver._entries]
    assert all(secret.encode() not in (h if isinstance(h, bytes) else h.encode()) for h in held)
    for kind in ("updated", "rotated"):
        resolver.changed(KeyChange(key_id=key.id, kind=kind, hashes=(hash_secret(secret),)))
        assert resolver.known(secret.encode()) is None
        assert (await resolver.identity(secret.encode())).key.id == key.id  # read again
        assert resolver.known(secret.encode()) is not None
    assert counted.lookups == 3
