"""Virtual keys against the real PostgreSQL on 127.0.0.1:5432: a database of its own per test,
created here and dropped at the end (as tests/test_history.py does)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from modelrouter.tenants import KeyChange, KeyStore

SERVER = os.environ.get("MODELROUTER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
ADMIN_KEY = "admin-key-for-the-tests-0001"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _server() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is needed on {SERVER} (trust auth, user postgres): {exc!r}")


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a fresh database, dropped afterwards."""
    name = f"mrtest_keys_{uuid.uuid4().hex[:12]}"
    conn = await _server()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield f"{SERVER}/{name}"
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Changes:
    """An `on_change` hook that keeps what it heard."""

    def __init__(self) -> None:
        self.heard: list[KeyChange] = []

    async def __call__(self, change: KeyChange) -> None:
        self.heard.append(change)


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def store(database: str, changes: Changes) -> AsyncIterator[KeyStore]:
    keys = KeyStore.from_url(database, on_change=changes)
    await keys.start()
    yield keys
    await keys.close()
