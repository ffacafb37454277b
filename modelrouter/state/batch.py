"""Commands issued in the same loop iteration go to Redis together, in one pipeline.

redis-py's asyncio client spends about 110 us of CPU on one command sent alone (connection
checkout, packing, parsing, bookkeeping), and about 20-40 us per command when 4 to 16 go in one
pipeline (4,000 sequential commands against a local Redis, process CPU time). Stream leases are
taken and released by many handlers at once, so under load most of them share a round trip.

The `Batcher` stands in for the client in the calls it carries (`evalsha`, `zrem`,
`script_load`), so `Script` runs unchanged on top of it. A caller that gives up (its timeout)
simply stops waiting: the command may still run, as with a direct call.
"""

from __future__ import annotations

import asyncio
from typing import Any

Command = tuple[Any, ...]


class Batcher:
    def __init__(self, client: Any, *, max_batch: int = 256) -> None:
        self._client = client
        self._max_batch = max_batch
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the client's calls it carries -------------------------------------------------------
    def evalsha(self, *args: Any) -> asyncio.Future[Any]:
        return self._enqueue(("EVALSHA", *args))

    def zrem(self, key: str, *members: str) -> asyncio.Future[Any]:
        return self._enqueue(("ZREM", key, *members))

    async def script_load(self, source: str) -> Any:
        return await self._client.script_load(source)

    async def close(self) -> None:
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    # -- batching ----------------------------------------------------------------------------
    def _enqueue(self, command: Command) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)  # after everyone who runs in this iteration
        elif len(self._queue) >= self._max_batch:
            self._flush()
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        assert self._loop is not None
        task = self._loop.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        # No timer of its own: every caller bounds its wait (RedisState._redis), and the client's
        # socket timeout bounds each read, so a hung server fails the batch by itself.
        try:
            if len(live) == 1:  # no pipeline object for a lone command
                results = [await self._one(live[0][0])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for command, _ in live:
                    pipe.execute_command(*command)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # a connection error or a timeout fails the whole batch
            for _, future in live:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else TimeoutError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _one(self, command: Command) -> Any:
        try:
            return await self._client.execute_command(*command)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, as in a pipeline
            return exc
