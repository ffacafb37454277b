"""Fixtures for the tests against a real Redis.

The suite uses REDIS_URL when it answers, else redis://127.0.0.1:6379/13, else a throwaway
`redis-server` on a free port when one is on PATH, else the tests skip, except when
MODELROUTER_REQUIRE_REDIS=1 (set by .ci/run): then a missing Redis is a failure.
Every test gets its own key prefix and its keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.shared_state.support import DEFAULT_URL, RedisServer, Replica, ping
from tests.shared_state.topology import Cluster, SentinelGroup, tools_available

pytestmark = pytest.mark.redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    for url in (os.environ.get("REDIS_URL"), DEFAULT_URL):
        if url and ping(url):
            yield url
            return
    if RedisServer.available():
        server = RedisServer().start()
        yield server.url
        server.kill()
        return
    message = "no Redis: set REDIS_URL, run one on 127.0.0.1:6379, or put redis-server on PATH"
    if os.environ.get("MODELROUTER_REQUIRE_REDIS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def prefix() -> str:
    return f"mrtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def rclient(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look into Redis; deletes the test's keys afterwards."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, pause or restart."""
    if not RedisServer.available():
        if os.environ.get("MODELROUTER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not on PATH")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer().start()
    yield server
    server.resume()
    server.kill()


Fleet = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Start gateway processes (in parallel) and stop them all at the end of the test."""
    started: list[Replica] = []
    session = aiohttp.ClientSession()

    async def start(
        env: dict[str, str], count: int = 1, *, workers: int = 1, group: bool = False
    ) -> list[Replica]:
        replicas = [Replica(env, workers=workers, group=group) for _ in range(count)]
        started.extend(replicas)
        for replica in replicas:
            await replica.ready(session)
        return replicas

    yield start
    await session.close()
    for replica in started:
        replica.stop()


def _need_tools() -> None:
    if not tools_available():
        message = "redis-server and redis-cli are needed for a local Cluster and Sentinel"
        if os.environ.get("MODELROUTER_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master Redis Cluster for the whole session. A test that kills a node brings it back
    and waits for `cluster_state:ok` before it ends."""
    _need_tools()
    cluster = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One master, one replica and three sentinels, for one module (a failover changes it)."""
    _need_tools()
    group = SentinelGroup(Path(tmp_path_factory.mktemp("sentinel")))
    try:
        yield group.start()
    finally:
        group.stop()
