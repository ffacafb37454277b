"""The Wire: commands from many callers share one connection and one write per loop iteration;
each caller gets its own reply, in order; a dropped connection fails exactly what was waiting."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from modelrouter.state.scripts import Script
from modelrouter.state.wire import InDoubt, Wire
from tests.conftest import free_port
from tests.shared_state.support import RedisServer


class CountingWrites:
    """Counts the writes the wire makes on its connection."""

    def __init__(self, wire: Wire) -> None:
        self.writes = 0
        self.wire = wire

    async def wrap(self) -> None:
        await self.wire.send("PING")  # connected now
        writer = self.wire._writer
        assert writer is not None
        write = writer.write

        def counted(data: bytes) -> None:
            self.writes += 1
            write(data)

        writer.write = counted  # type: ignore[method-assign]


async def test_commands_issued_together_leave_in_one_write_and_each_caller_gets_its_reply(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {f"m{i}": i for i in range(10)})
    wire = Wire(rclient.connection_pool)
    counting = CountingWrites(wire)
    await counting.wrap()
    removed = await asyncio.gather(*(wire.zrem(key, f"m{i}") for i in (*range(8), 99)))
    assert removed == [1] * 8 + [0], "each caller gets its own command's answer"
    assert counting.writes == 1
    assert await rclient.zcard(key) == 2
    await wire.close()


async def test_the_connection_is_named_and_on_the_configured_database(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, client_name=f"{prefix}-wire")
    wire = Wire(client.connection_pool)
    await wire.send("SET", f"{prefix}:db", "here")
    assert await wire.send("CLIENT", "GETNAME") == f"{prefix}-wire"
    assert await client.get(f"{prefix}:db") == b"here"  # the same database as the client
    await client.delete(f"{prefix}:db")
    await wire.close()
    await client.aclose()


async def test_an_error_reaches_only_the_command_that_caused_it(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.set(f"{prefix}:s", "not a sorted set")
    wire = Wire(rclient.connection_pool)
    good = wire.zrem(f"{prefix}:z", "a")
    bad = wire.zrem(f"{prefix}:s", "a")
    after = wire.send("PING")
    assert await good == 0
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bad
    assert await after == "PONG"
    await wire.close()


async def test_scripts_load_again_through_the_wire_after_a_flush(
    rclient: aioredis.Redis, prefix: str
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    wire = Wire(rclient.connection_pool)
    await rclient.script_flush()  # as after a restart or failover: NOSCRIPT on the first call
    with pytest.raises(NoScriptError):
        await wire.evalsha(script.sha, 1, f"{prefix}:n")
    results = await asyncio.gather(*(script(wire, [f"{prefix}:n"], []) for _ in range(3)))
    assert sorted(results) == [1, 2, 3]
    assert await rclient.evalsha(script.sha, 1, f"{prefix}:n") == 4, "loaded again"
    await wire.close()


async def test_a_caller_that_gave_up_is_skipped_and_the_others_answered(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.zadd(f"{prefix}:z", {"a": 1, "b": 2})
    wire = Wire(rclient.connection_pool)
    gone = wire.zrem(f"{prefix}:z", "a")
    kept = wire.zrem(f"{prefix}:z", "b")
    gone.cancel()  # its caller gave up: the command was queued, it still runs
    assert await kept == 1
    assert await rclient.zcard(f"{prefix}:z") == 0
    await wire.close()


async def test_a_dead_server_fails_every_waiting_command_and_the_next_one_reconnects() -> None:
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    wire = Wire(client.connection_pool)
    try:
        assert await wire.send("PING") == "PONG"
        server.pause()
        waiting = [wire.send("PING"), wire.send("PING")]
        await asyncio.sleep(0.05)
        wire.reset(TimeoutError())  # what the backend does when a caller's wait ran out
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, InDoubt) for r in results), "sent: they may have run"
        server.resume()
        assert await wire.send("PING") == "PONG", "a fresh connection"
        server.kill()
        with pytest.raises(InDoubt, match="closed by server"):  # written, then the server left
            await wire.send("PING")
        with pytest.raises(RedisConnectionError, match="111"):  # refused: never written
            await wire.send("PING")
    finally:
        server.resume()
        server.kill()
        await wire.close()
        await client.aclose()


async def test_nothing_listening_fails_the_commands_as_not_sent() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool)
    results = await asyncio.gather(wire.send("PING"), wire.send("PING"), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert not any(isinstance(r, InDoubt) for r in results)
    await client.aclose()


async def test_a_full_queue_refuses_at_once() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool, max_pending=2)
    first, second, third = (wire.send("PING") for _ in range(3))
    assert third.done()
    with pytest.raises(RedisConnectionError, match="too many"):
        third.result()
    await asyncio.gather(first, second, return_exceptions=True)
    await client.aclose()
