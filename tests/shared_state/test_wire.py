"""The Wire: commands from many callers share one connection and one write per loop iteration;
each caller gets its own reply, in order; one timer bounds every wait; a dropped connection
fails exactly what was waiting, as sent (in doubt) or not sent."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from modelrouter.config import RedisSettings
from modelrouter.state.connect import connect
from modelrouter.state.degraded import cause
from modelrouter.state.scripts import Script
from modelrouter.state.wire import InDoubt, NotSent, Wire
from tests.conftest import free_port, wait_until
from tests.shared_state.support import RedisServer


class CountingTransport:
    """Stands in for the wire's transport: counts the writes, passes everything on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()


def count_writes(wire: Wire) -> list[int]:
    counting = CountingTransport(wire._transport)
    wire._transport = counting  # type: ignore[assignment]
    return counting.writes


async def test_commands_issued_together_leave_in_one_write_and_each_caller_gets_its_reply(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {f"m{i}": i for i in range(10)})
    wire = Wire(rclient.connection_pool)
    assert await wire.send("PING") == "PONG"
    writes = count_writes(wire)
    removed = await asyncio.gather(*(wire.send("ZREM", key, f"m{i}") for i in (*range(8), 99)))
    assert removed == [1] * 8 + [0], "each caller gets its own command's answer"
    assert len(writes) == 1
    assert await rclient.zcard(key) == 2
    await wire.close()


async def test_the_connection_is_named_on_the_clients_database_and_outlives_collection(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, client_name=f"{prefix}-wire")
    wire = Wire(client.connection_pool)
    await wire.send("SET", f"{prefix}:db", "here")
    gc.collect()  # redis-py's connection object closes its streams when collected
    assert await wire.send("CLIENT", "GETNAME") == f"{prefix}-wire"
    assert await client.get(f"{prefix}:db") == b"here"  # the same database as the client
    await client.delete(f"{prefix}:db")
    await wire.close()
    await client.aclose()


async def test_a_release_nobody_waits_for_still_runs_before_later_commands(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {"a": 1})
    wire = Wire(rclient.connection_pool)
    wire.zrem(key, "a")  # nothing to await
    assert await wire.send("ZCARD", key) == 0
    await wire.close()


async def test_an_error_reaches_only_the_command_that_caused_it(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.set(f"{prefix}:s", "not a sorted set")
    wire = Wire(rclient.connection_pool)
    good = wire.send("ZREM", f"{prefix}:z", "a")
    bad = wire.send("ZREM", f"{prefix}:s", "a")
    after = wire.send("PING")
    assert await good == 0
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bad
    assert await after == "PONG"
    await wire.close()


async def test_a_script_the_server_forgot_is_loaded_and_run_again_for_its_caller(
    rclient: aioredis.Redis, prefix: str
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    wire = Wire(rclient.connection_pool)
    await rclient.script_flush()  # as after a restart or failover: NOSCRIPT on the first call
    results = await asyncio.gather(*(wire.script(script, [f"{prefix}:n"], []) for _ in range(3)))
    assert sorted(results) == [1, 2, 3]
    assert await rclient.evalsha(script.sha, 1, f"{prefix}:n") == 4, "loaded again"
    await wire.close()


async def test_a_caller_that_gave_up_is_skipped_and_the_others_answered(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.zadd(f"{prefix}:z", {"a": 1, "b": 2})
    wire = Wire(rclient.connection_pool)
    gone = wire.send("ZREM", f"{prefix}:z", "a")
    kept = wire.send("ZREM", f"{prefix}:z", "b")
    gone.cancel()  # its caller gave up: the command was queued, it still runs
    assert await kept == 1
    assert await rclient.zcard(f"{prefix}:z") == 0
    await wire.close()


async def test_a_silent_server_fails_every_waiting_command_within_the_timeout() -> None:
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    wire = Wire(client.connection_pool, timeout=0.2)
    try:
        assert await wire.send("PING") == "PONG"
        server.pause()
        started = time.monotonic()
        results = await asyncio.gather(wire.send("PING"), wire.send("PING"), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(r, InDoubt) for r in results), "sent: they may have run"
        assert "no reply from Redis within 0.2 s" in str(results[0])
        print(f"\nwaits bounded by the wire's one timer: {waited * 1000:.0f} ms (timeout 200)")
        server.resume()
        assert await wire.send("PING") == "PONG", "a fresh connection"
        server.kill()
        # Written before the wire heard of the close (in doubt), or not: either way it says so.
        with pytest.raises((InDoubt, NotSent), match="closed by server"):
            await wire.send("PING")
        with pytest.raises(RedisConnectionError, match="111"):  # refused: never written
            await wire.send("PING")
    finally:
        server.resume()
        server.kill()
        await wire.close()
        await client.aclose()


@pytest.mark.parametrize("retries", ["none (as the backend connects)", "redis-py's default"])
async def test_nothing_listening_fails_the_commands_as_not_sent(retries: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    if retries.startswith("none"):
        client = connect(url, RedisSettings(timeout=0.2))
    else:  # retried with backoff past the wire's timeout: its timer fails them
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool, timeout=0.2)
    results = await asyncio.gather(wire.send("PING"), wire.send("PING"), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert not any(isinstance(r, InDoubt) for r in results), "never written: they did not run"
    assert {cause(r) for r in results} <= {"connection_refused", "timeout"}
    await client.aclose()


async def test_a_full_queue_refuses_at_once() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool, max_pending=2)
    first, second, third = (wire.send("PING") for _ in range(3))
    assert third.done()
    with pytest.raises(RedisConnectionError, match="too many"):
        third.result()
    await asyncio.gather(first, second, return_exceptions=True)
    await wait_until(lambda: asyncio.sleep(0, not wire._waiting))
    await client.aclose()
