"""Fixtures for the history tests: a fresh database per test on the real PostgreSQL
(127.0.0.1:5432, trust auth, dropped at the end), reading its rows, and a record to write."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from modelrouter.history.records import Record
from tests.conftest import wait_until

SERVER = os.environ.get("MODELROUTER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


async def admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is needed on {SERVER} (trust auth, user postgres): {exc!r}")


async def create_database() -> str:
    """A fresh database's URL (drop it with `drop_database`)."""
    name = f"mrtest_{uuid.uuid4().hex[:12]}"
    conn = await admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{SERVER}/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await admin()
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a fresh database, dropped afterwards."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def rows(url: str, sql: str = "SELECT * FROM modelrouter_requests ORDER BY id") -> list[Any]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def count_rows(url: str) -> int:
    try:
        return len(await rows(url))
    except asyncpg.UndefinedTableError:
        return 0


async def wait_rows(url: str, n: int, *, timeout: float = 5.0) -> list[Any]:
    async def enough() -> bool:
        return await count_rows(url) >= n

    await wait_until(enough, timeout=timeout)
    return await rows(url)


def record(n: int, *, days_old: float = 0, **fields: Any) -> Record:
    """A finished request's row, `r<n>`, with `fields` changed."""
    row = Record(
        f"r{n}",
        datetime.now(UTC) - timedelta(days=days_old),
        "anonymous",
        "/chat",
        "groq",
        "m",
        1,
        200,
        None,
        1,
        2,
        3.0,
        3.0,
        None,
        None,
        None,
    )
    return msgspec.structs.replace(row, **fields) if fields else row
