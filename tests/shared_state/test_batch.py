"""The Batcher: commands issued together share one round trip; each caller gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from modelrouter.state.batch import Batcher
from modelrouter.state.scripts import Script


class Counting:
    """A real client that counts how it was used."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pipelines: list[int] = []  # commands per pipeline sent
        self.single = 0

    def pipeline(self, *, transaction: bool) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        async def counted(**kwargs: Any) -> Any:
            self.pipelines.append(len(pipe.command_stack))
            return await execute(**kwargs)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    async def execute_command(self, *args: Any) -> Any:
        self.single += 1
        return await self.client.execute_command(*args)

    async def script_load(self, source: str) -> Any:
        return await self.client.script_load(source)


async def test_commands_issued_together_share_one_pipeline(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {f"m{i}": i for i in range(10)})
    counting = Counting(rclient)
    batch = Batcher(counting)
    removed = await asyncio.gather(*(batch.zrem(key, f"m{i}") for i in (*range(8), 99)))
    assert removed == [1] * 8 + [0], "each caller gets its own command's answer"
    assert counting.pipelines == [9]
    assert counting.single == 0
    assert await rclient.zcard(key) == 2


async def test_a_lone_command_goes_without_a_pipeline(rclient: aioredis.Redis, prefix: str) -> None:
    await rclient.zadd(f"{prefix}:z", {"a": 1})
    counting = Counting(rclient)
    batch = Batcher(counting)
    assert await batch.zrem(f"{prefix}:z", "a") == 1
    assert (counting.pipelines, counting.single) == ([], 1)


async def test_an_error_reaches_only_the_command_that_caused_it(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.set(f"{prefix}:s", "not a sorted set")
    batch = Batcher(rclient)
    good = batch.zrem(f"{prefix}:z", "a")
    bad = batch.zrem(f"{prefix}:s", "a")
    assert await good == 0
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bad


async def test_scripts_reload_through_the_batcher_after_a_flush(
    rclient: aioredis.Redis, prefix: str
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    batch = Batcher(rclient)
    await rclient.script_flush()  # as after a restart or failover: NOSCRIPT on the first call
    results = await asyncio.gather(*(script(batch, [f"{prefix}:n"], []) for _ in range(3)))
    assert sorted(results) == [1, 2, 3]
    assert await rclient.evalsha(script.sha, 1, f"{prefix}:n") == 4, "loaded again"


async def test_a_caller_that_gave_up_is_skipped_and_the_others_answered(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.zadd(f"{prefix}:z", {"a": 1, "b": 2})
    batch = Batcher(rclient)
    gone = batch.zrem(f"{prefix}:z", "a")
    kept = batch.zrem(f"{prefix}:z", "b")
    gone.cancel()
    assert await kept == 1
    assert await rclient.zrange(f"{prefix}:z", 0, -1) == ["a"], "the abandoned command not sent"


async def test_a_dead_server_fails_every_command_of_the_batch() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    batch = Batcher(client)
    results = await asyncio.gather(
        batch.zrem("k", "a"), batch.zrem("k", "b"), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
    await client.aclose()
