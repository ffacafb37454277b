"""The key store on the real PostgreSQL: what is written, what is refused whole, rotation's
grace, revocation that keeps the row, pages, lookups by hash, and the changes it reports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import pytest

from modelrouter.tenants import (
    BadCursor,
    BadKey,
    KeyPatch,
    KeyRevoked,
    KeyStore,
    NameTaken,
    NewKey,
    hash_secret,
    well_formed,
)
from modelrouter.tenants.schema import LATEST, migrate
from tests.tenants.conftest import Changes


def new(name: str = "team-a-bot", **fields: Any) -> NewKey:
    return msgspec.convert({"name": name, **fields}, NewKey)


async def rows(url: str) -> list[Any]:
    """Every key row (none when the table is not even there yet)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return list(await conn.fetch("SELECT * FROM modelrouter_keys ORDER BY created_at"))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def test_create_returns_the_secret_once_and_stores_only_its_hash(
    store: KeyStore, database: str
) -> None:
    key, secret = await store.create(
        new(
            team="search",
            models=["groq/*", "fast"],
            rpm=20,
            tpm=40_000,
            max_parallel_streams=2,
            budget_usd=0.01,
            budget_period="month",
            metadata={"owner": "ana"},
        )
    )
    assert well_formed(secret)
    assert key.id.startswith("key_")
    assert (key.rpm, key.tpm, key.max_parallel_streams) == (20, 40_000, 2)
    assert key.budget_nanos == 10_000_000  # $0.01, exactly
    assert key.models == ("groq/*", "fast")
    (row,) = await rows(database)
    assert row["secret_hash"] == hash_secret(secret)
    assert secret not in str(dict(row))
    assert (row["budget_usd"], row["budget_period"]) == (Decimal("0.01"), "month")
    info = key.info(datetime.now(UTC))
    assert info.status == "active"
    assert "secret" not in str(msgspec.to_builtins(info))
    assert secret not in msgspec.json.encode(info).decode()


async def test_a_key_is_found_by_its_secrets_hash_only(store: KeyStore) -> None:
    key, secret = await store.create(new())
    found = await store.lookup_by_hash(hash_secret(secret))
    assert found == key
    assert found.refusal(hash_secret(secret), datetime.now(UTC)) is None
    assert await store.lookup_by_hash(hash_secret(secret + "x")) is None
    assert await store.get(key.id) == key
    assert await store.find("team-a-bot") == key
    assert await store.get("not-a-key-id") is None  # refused without a query


async def test_a_name_clash_is_refused_and_nothing_is_written(
    store: KeyStore, database: str
) -> None:
    await store.create(new("dup"))
    with pytest.raises(NameTaken, match="'dup'"):
        await store.create(new("dup", rpm=5))
    other, _ = await store.create(new("other"))
    with pytest.raises(NameTaken):
        await store.patch(other.id, KeyPatch(name="dup", rpm=7))
    found = await rows(database)
    assert [(r["name"], r["rpm"]) for r in found] == [("dup", None), ("other", None)]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"rpm": -1}, "Expected `int` >= 1 - at `$.rpm`"),
        ({"tpm": 0}, "at `$.tpm`"),
        ({"max_parallel_streams": 2.5}, "at `$.max_parallel_streams`"),
        ({"budget_usd": -0.01}, "at `$.budget_usd`"),
        ({"budget_usd": float("inf")}, "at `$.budget_usd`"),
        ({"budget_usd": float("nan")}, "at `$.budget_usd`"),
        ({"budget_period": "year"}, "at `$.budget_period`"),
        ({"metadata": {"x": "y" * 5000}}, "larger than 4096 bytes"),
        ({"expires_at": "2030-01-01T00:00:00"}, "timezone"),
        ({"models": ["has space"]}, "at `$.models[0]`"),
        ({"name": "bad name!"}, "at `$.name`"),
        ({"colour": "red"}, "unknown field `colour`"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    body: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({"name": "ok", **body}, NewKey)
    assert complaint in str(caught.value)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, KeyPatch)


async def test_an_expiry_in_the_past_is_refused(store: KeyStore, database: str) -> None:
    with pytest.raises(BadKey, match="past"):
        await store.create(new(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert await rows(database) == []


async def test_patch_changes_the_fields_given_and_null_clears(store: KeyStore) -> None:
    key, secret = await store.create(new(team="a", rpm=10, budget_usd=5, metadata={"a": 1}))
    patched = await store.patch(
        key.id, msgspec.convert({"team": None, "tpm": 99, "metadata": {"b": 2}}, KeyPatch)
    )
    assert patched is not None
    assert (patched.team, patched.rpm, patched.tpm) == (None, 10, 99)
    assert patched.budget_nanos == 5_000_000_000
    assert patched.metadata == {"b": 2}
    assert patched.updated_at > key.updated_at
    assert patched.secret_hash == hash_secret(secret)
    with pytest.raises(BadKey, match="nothing to change"):
        await store.patch(key.id, KeyPatch())
    assert await store.patch("key_0000000000000000", KeyPatch(rpm=1)) is None


async def test_revoke_keeps_the_row_and_refuses_the_key(store: KeyStore, database: str) -> None:
    key, secret = await store.create(new())
    revoked = await store.revoke(key.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    now = datetime.now(UTC)
    assert revoked.refusal(hash_secret(secret), now) == "revoked"
    assert revoked.info(now).status == "revoked"
    again = await store.revoke(key.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at  # the first revocation's time stays
    assert len(await rows(database)) == 1
    found = await store.lookup_by_hash(hash_secret(secret))
    assert found is not None
    assert found.refusal(hash_secret(secret), now) == "revoked"
    with pytest.raises(KeyRevoked):
        await store.rotate(key.id)


async def test_disabled_and_expired_keys_are_refused(store: KeyStore) -> None:
    key, secret = await store.create(new(expires_at=datetime.now(UTC) + timedelta(hours=1)))
    now = datetime.now(UTC)
    assert key.refusal(hash_secret(secret), now) is None
    assert key.refusal(hash_secret(secret), now + timedelta(hours=2)) == "expired"
    disabled = await store.patch(key.id, KeyPatch(disabled=True))
    assert disabled is not None
    assert disabled.refusal(hash_secret(secret), now) == "disabled"


async def test_rotation_gives_a_new_secret_and_the_old_one_works_during_its_grace(
    store: KeyStore,
) -> None:
    key, old = await store.create(new())
    rotated = await store.rotate(key.id, grace_seconds=3600)
    assert rotated is not None
    after, fresh = rotated
    assert fresh != old
    assert well_formed(fresh)
    assert after.id == key.id
    now = datetime.now(UTC)
    by_old = await store.lookup_by_hash(hash_secret(old))
    by_new = await store.lookup_by_hash(hash_secret(fresh))
    assert by_old == by_new == after
    assert after.refusal(hash_secret(fresh), now) is None
    assert after.refusal(hash_secret(old), now) is None  # within the grace
    assert after.refusal(hash_secret(old), now + timedelta(hours=2)) == "rotated"
    assert after.info(now).previous_key_expires_at == after.previous_expires_at


async def test_rotation_without_grace_ends_the_old_secret_at_once(store: KeyStore) -> None:
    key, old = await store.create(new())
    first = await store.rotate(key.id, grace_seconds=600)
    assert first is not None
    _, middle = first
    second = await store.rotate(key.id)  # grace 0: the secrets before stop now
    assert second is not None
    after, fresh = second
    now = datetime.now(UTC)
    assert await store.lookup_by_hash(hash_secret(old)) is None
    assert await store.lookup_by_hash(hash_secret(middle)) is None
    assert after.refusal(hash_secret(fresh), now) is None
    assert after.previous_hash is None
    assert await store.rotate("key_0000000000000000") is None


async def test_keys_are_listed_newest_first_in_pages(store: KeyStore) -> None:
    made = [
        (await store.create(new(f"k{i}", team="even" if i % 2 == 0 else "odd")))[0]
        for i in range(5)
    ]
    first, cursor = await store.page(limit=2)
    assert [k.name for k in first] == ["k4", "k3"]
    assert cursor is not None
    second, cursor = await store.page(limit=2, cursor=cursor)
    assert [k.name for k in second] == ["k2", "k1"]
    last, cursor = await store.page(limit=2, cursor=cursor)
    assert ([k.name for k in last], cursor) == (["k0"], None)
    evens, _ = await store.page(limit=10, team="even")
    assert [k.name for k in evens] == ["k4", "k2", "k0"]
    assert len(made) == 5
    with pytest.raises(BadCursor):
        await store.page(limit=2, cursor="garbage")


async def test_each_change_is_reported_with_the_hashes_it_makes_stale(
    store: KeyStore, changes: Changes
) -> None:
    key, old = await store.create(new())
    rotated = await store.rotate(key.id, grace_seconds=0)
    assert rotated is not None
    _, fresh = rotated
    await store.patch(key.id, KeyPatch(rpm=3))
    await store.revoke(key.id)
    heard = [(c.kind, c.key_id, set(c.hashes)) for c in changes.heard]
    assert heard == [
        ("created", key.id, {hash_secret(old)}),
        ("rotated", key.id, {hash_secret(fresh), hash_secret(old)}),
        ("updated", key.id, {hash_secret(fresh)}),
        ("revoked", key.id, {hash_secret(fresh)}),
    ]


async def test_a_failing_change_hook_does_not_undo_the_change(database: str) -> None:
    async def broken(_: object) -> None:
        raise ConnectionError("redis is away")

    store = KeyStore.from_url(database, on_change=broken)
    await store.start()
    try:
        key, _ = await store.create(new())
        assert await store.get(key.id) == key
    finally:
        await store.close()


async def test_migrations_run_once_even_when_replicas_start_together(database: str) -> None:
    conns = [await asyncpg.connect(database, timeout=5) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        assert sorted(applied) == [[], [], list(range(1, LATEST + 1))]
        assert await migrate(conns[0]) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_the_store_serves_a_database_recreated_under_it(database: str) -> None:
    store = KeyStore.from_url(database)
    await store.start()
    try:
        await store.create(new("before"))
        conn = await asyncpg.connect(database, timeout=5)
        await conn.execute("DROP TABLE modelrouter_keys; DROP TABLE modelrouter_tenants_schema")
        await conn.close()
        with pytest.raises(asyncpg.UndefinedTableError):
            await store.create(new("during"))
        key, _ = await store.create(new("after"))  # migrated again
        assert key.name == "after"
    finally:
        await store.close()
