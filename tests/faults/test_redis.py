"""The fault matrix, Redis side: a redis-server of the test's own, paused (SIGSTOP), killed and
restarted while a stream runs, and a SIGTERM while it is paused. The stream must finish, the
gateway must fall back to local state and come back, and no stream slot may stay taken."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
import redis

from modelrouter.mock.text import reply_tokens
from tests.conftest import wait_until
from tests.faults.conftest import Gateways
from tests.faults.support import (
    GatewayProcess,
    MockProcess,
    chunks,
    fault_env,
    no_leaks,
)
from tests.faults.test_shutdown import GRACE, OpenStream, exit_code
from tests.shared_state.support import RedisServer

pytestmark = pytest.mark.redis
STREAM = "token_delay=0.1,tokens=30"
SLOTS = "mr:{streams}:streams:v1"  # the sorted set of MAX_CONCURRENT_STREAMS leases


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()
    server.kill()


def redis_env(mock: MockProcess, server: RedisServer, groq: str = STREAM) -> dict[str, str]:
    return fault_env(
        mock,
        groq=groq,
        REDIS_URL=server.url,
        REDIS_TIMEOUT="0.25",
        STREAM_LEASE_TTL_SECONDS="2",
        STREAM_LEASE_RENEW_SECONDS="0.5",
    )


def slots_taken(server: RedisServer) -> int:
    client = redis.Redis.from_url(server.url, socket_timeout=1)
    try:
        return int(client.zcard(SLOTS))
    finally:
        client.close()


async def backend(gateway: GatewayProcess, mode: str) -> None:
    async def check() -> bool:
        return bool((await gateway.health())["state_backend"] == mode)

    await wait_until(check, timeout=10)


async def slots_free(server: RedisServer) -> None:
    async def check() -> bool:
        return slots_taken(server) == 0

    await wait_until(check, timeout=6)  # a slot Redis missed the release of expires (TTL 2 s)


async def test_redis_paused_mid_stream_the_stream_finishes_and_slots_come_back(
    mock: MockProcess, gateways: Gateways, redis_server: RedisServer
) -> None:
    gateway = await gateways(redis_env(mock, redis_server))
    stream = await OpenStream(gateway).start()
    assert slots_taken(redis_server) == 1
    redis_server.pause()
    try:
        events = await stream.rest()
        assert chunks(events) == reply_tokens(30)
        assert events[-1] == ("message", "[DONE]")
        await backend(gateway, "degraded")
    finally:
        redis_server.resume()
    await backend(gateway, "redis")
    await slots_free(redis_server)
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_redis_errors_total") > 0
    assert page.value("modelrouter_provider_success_total", provider="groq") == 1


async def test_redis_killed_and_restarted_mid_stream_the_stream_finishes(
    mock: MockProcess, gateways: Gateways, redis_server: RedisServer
) -> None:
    gateway = await gateways(redis_env(mock, redis_server))
    stream = await OpenStream(gateway).start()
    redis_server.kill()
    await asyncio.sleep(0.5)
    redis_server.start()  # the same port, empty
    events = await stream.rest()
    assert events[-1] == ("message", "[DONE]")
    await backend(gateway, "redis")
    # Back on Redis: a new stream takes a slot there and gives it back.
    stream = await OpenStream(gateway).start()
    assert slots_taken(redis_server) == 1
    assert (await stream.rest())[-1] == ("message", "[DONE]")
    await slots_free(redis_server)
    await no_leaks(gateway, mock)


async def test_sigterm_while_redis_is_paused_mid_stream_exits_in_time(
    mock: MockProcess, gateways: Gateways, redis_server: RedisServer
) -> None:
    env = redis_env(mock, redis_server, "token_delay=0.2,tokens=500")
    gateway = await gateways(env | {"SHUTDOWN_TIMEOUT_SECONDS": "1", "DRAIN_SECONDS": "0"})
    stream = await OpenStream(gateway).start()
    redis_server.pause()
    try:
        gateway.signal(signal.SIGTERM)
        events = await stream.rest()
        assert events[-1][0] == "error"
        assert await exit_code(gateway, 1 + GRACE) == 0
    finally:
        redis_server.resume()
    await slots_free(redis_server)
