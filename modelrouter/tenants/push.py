"""Key changes pushed to every replica through Redis pub/sub (REDIS_URL set).

A replica (or the `modelrouter keys` command) that changes a key publishes its `KeyChange`
on `<REDIS_KEY_PREFIX>:keys:v1`; every replica subscribed hears it and drops (or, for a
revocation, refuses) the cached lookups of its hashes, so a revoked key is refused fleet-wide
within a round trip. Pub/sub is at most once: while the subscription is down (and each time it
is made again) every cached key is marked stale, to be re-read at its next use (the last known
answer still serves if the database is away too), and KEY_CACHE_SECONDS bounds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog

from modelrouter.tenants.store import KeyChange

log = structlog.get_logger("modelrouter.tenants")
VERSION: Final = "v1"
_decode = msgspec.json.Decoder(KeyChange).decode
_encode = msgspec.json.Encoder().encode


def channel_of(prefix: str) -> str:
    return f"{prefix}:keys:{VERSION}"


async def publish(client: Any, channel: str, change: KeyChange) -> None:
    await client.publish(channel, _encode(change))


class KeyFeed:
    """Subscribed to the keys channel for the app's lifetime, resubscribing on its own."""

    def __init__(
        self,
        client: Any,
        channel: str,
        *,
        on_change: Callable[[KeyChange], None],
        on_gap: Callable[[], None],
        min_wait: float = 0.05,
        max_wait: float = 5.0,
    ) -> None:
        self._client = client
        self.channel = channel
        self._on_change = on_change
        self._on_gap = on_gap
        self._min_wait, self._max_wait = min_wait, max_wait
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while subscribed (tests wait on it)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-key-feed")

    async def publish(self, change: KeyChange) -> None:
        await publish(self._client, self.channel, change)

    async def _run(self) -> None:
        wait = self._min_wait
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._on_gap()  # whatever was published before this is not heard: re-read
                self.subscribed.set()
                wait = self._min_wait
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self.handle(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: resubscribe, re-read
                if self.subscribed.is_set():
                    log.warning("redis_key_feed_lost", error=type(exc).__name__)
                self.subscribed.clear()
                self._on_gap()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)
            await asyncio.sleep(wait)
            wait = min(wait * 2, self._max_wait)

    def handle(self, data: str | bytes) -> None:
        try:
            change = _decode(data)
        except msgspec.DecodeError as exc:
            log.warning("key_change_ignored", error=str(exc))
            return
        self._on_change(change)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), 1.0)
