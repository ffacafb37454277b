"""Virtual keys across two gateway processes sharing the real Redis and PostgreSQL: a key's
rpm and max_parallel_streams hold for the fleet exactly, and a key revoked on one replica (or
by `modelrouter keys revoke`) is refused by the other within a second (measured, printed: run
with -s to see it)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import CLIENT_KEY, GROQ_KEY, OPENROUTER_KEY, USER, Mock
from tests.shared_state.conftest import Fleet, fleet, prefix, rclient, redis_url
from tests.shared_state.support import ROOT, Replica, gateway_env
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

pytestmark = pytest.mark.redis
__all__ = ["fleet", "prefix", "rclient", "redis_url"]  # the shared_state fixtures, used here


def env(mock: Mock, redis_url: str, prefix: str, database: str, groq: str = "") -> dict[str, str]:
    return gateway_env(
        PROVIDER_ORDER="groq,openrouter",
        GROQ_API_KEY=GROQ_KEY,
        GROQ_BASE_URL=mock.base(groq),
        OPENROUTER_API_KEY=OPENROUTER_KEY,
        OPENROUTER_BASE_URL=mock.base(),
        GROQ_RATE_LIMIT="0",
        OPENROUTER_RATE_LIMIT="0",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        DATABASE_URL=database,
        ADMIN_API_KEY=ADMIN_KEY,
        API_KEY=CLIENT_KEY,
    )


async def new_key(session: aiohttp.ClientSession, replica: Replica, **settings: Any) -> str:
    async with session.post(
        f"{replica.url}/admin/keys", json={"name": "k", **settings}, headers=AS_ADMIN
    ) as response:
        assert response.status == 201, await response.text()
        secret: str = (await response.json())["key"]
        return secret


async def status(session: aiohttp.ClientSession, url: str, secret: str) -> int:
    async with session.post(url, json=USER, headers={"Authorization": f"Bearer {secret}"}) as r:
        await r.read()
        return r.status


async def test_a_keys_rpm_holds_exactly_across_two_replicas(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: Any, database: str
) -> None:
    replicas = await fleet(env(mock, redis_url, prefix, database), 2)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        secret = await new_key(session, replicas[0], rpm=20)
        urls = [f"{replicas[i % 2].url}/chat" for i in range(100)]
        statuses = await asyncio.gather(*(status(session, url, secret) for url in urls))
    assert sorted(statuses) == [200] * 20 + [429] * 80
    buckets = [k async for k in rclient.scan_iter(f"{prefix}:{{key_*}}:krpm:v1")]
    assert len(buckets) == 1  # one bucket for the fleet, hash-tagged by the key's id


async def test_a_keys_streams_hold_exactly_across_two_replicas(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, rclient: Any, database: str
) -> None:
    replicas = await fleet(env(mock, redis_url, prefix, database, groq="stall_after=2"), 2)
    async with aiohttp.ClientSession() as session:
        secret = await new_key(session, replicas[0], max_parallel_streams=3)
        headers = {"Authorization": f"Bearer {secret}"}
        opened = []
        statuses = []
        for i in range(8):
            path = "/stream" if i % 2 else "/v1/chat/completions"
            body = USER if i % 2 else {**USER, "stream": True}
            response = await session.post(
                f"{replicas[i % 2].url}{path}", json=body, headers=headers
            )
            statuses.append(response.status)
            if response.status == 200:
                await response.content.readuntil(b"\n\n")  # streaming: the lease is held
                opened.append(response)
            else:
                response.close()
        assert sorted(statuses) == [200] * 3 + [429] * 5
        leases = [k async for k in rclient.scan_iter(f"{prefix}:{{key_*}}:kstreams:v1")]
        assert len(leases) == 1  # the fleet's leases, in one hash-tagged key
        assert await rclient.zcard(leases[0]) == 3
        for response in opened:
            response.close()


async def test_a_keys_tpm_holds_exactly_across_two_replicas(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, database: str
) -> None:
    # Answers take a second: every reservation is made before any is settled.
    replicas = await fleet(env(mock, redis_url, prefix, database, groq="first_delay=1"), 2)
    ask = {**USER, "max_tokens": 31}  # a ceiling of 11 bytes + 8 + 31 = 50 tokens
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        secret = await new_key(session, replicas[0], tpm=500)
        headers = {"Authorization": f"Bearer {secret}"}

        async def one(i: int) -> int:
            url = f"{replicas[i % 2].url}/chat"
            async with session.post(url, json=ask, headers=headers) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(100)))
    assert sorted(statuses) == [200] * 10 + [429] * 90


async def refused_within(
    session: aiohttp.ClientSession, url: str, secret: str, *, limit: float = 1.0
) -> float:
    """Seconds from now until `url` refuses `secret` (polled back to back, up to `limit`)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if await status(session, url, secret) == 401:
            break
    return time.perf_counter() - start


async def test_a_revoked_key_is_refused_by_the_other_replica_within_a_second(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, database: str
) -> None:
    replicas = await fleet(env(mock, redis_url, prefix, database), 2)
    first, second = replicas
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{first.url}/admin/keys", json={"name": "gone"}, headers=AS_ADMIN
        )
        created = await response.json()
        other = await new_key(session, first)  # revoked by the command line below
        url = f"{second.url}/chat"
        for secret in (created["key"], other):
            assert await status(session, url, secret) == 200  # known, cached, on the second
        async with session.delete(f"{first.url}/admin/keys/{created['id']}", headers=AS_ADMIN):
            pass
        api_delay = await refused_within(session, url, created["key"])
        revoke = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelrouter",
            "keys",
            "revoke",
            "k",
            env={**env(mock, redis_url, prefix, database), "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        assert await revoke.wait() == 0
        cli_delay = await refused_within(session, url, other)
    print(
        f"\nrevocation seen by the other replica after {api_delay * 1000:.1f} ms (API), "
        f"{cli_delay * 1000:.1f} ms after the command exited (CLI)"
    )
    assert api_delay < 1.0
    assert cli_delay < 1.0
