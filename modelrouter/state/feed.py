"""The health channel: every replica subscribes and hears every provider's health change.

The `HEALTH_SAVE` script publishes each record it writes, as a JSON array
`[failures, blacklisted_until, reason, version, provider]`; this task decodes them and hands them
on. A lost connection is reported to `on_error` (the backend then goes local and resubscribes
when it reconnects, reading every provider's record again so nothing missed stays missed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from modelrouter.state.base import HealthRecord

log = structlog.get_logger("modelrouter.state")

_decode = msgspec.json.Decoder(tuple[float, str, str, int, str]).decode


def decode_record(fields: tuple[Any, ...] | list[Any]) -> tuple[str, HealthRecord]:
    """`[failures, until, reason, version, provider]` (script reply or message) -> record."""
    failures, until, reason, version, provider = fields
    record = HealthRecord(int(failures), float(until), str(reason) or None, int(version))
    return str(provider), record


class HealthFeed:
    def __init__(
        self,
        client: Any,
        channel: str,
        *,
        on_record: Callable[[str, HealthRecord], None],
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_record = on_record
        self._on_error = on_error
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """(Re)subscribe; returns once the subscription is confirmed."""
        await self.stop()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        await pubsub.subscribe(self._channel)
        self._task = asyncio.get_running_loop().create_task(
            self._listen(pubsub), name="redis-health-feed"
        )

    @property
    def listening(self) -> bool:
        """Subscribed, and the connection has not been lost since."""
        return self._task is not None and not self._task.done()

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                self.handle(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the feed means "resync"
            self._on_error("subscribe", exc)

    def handle(self, data: str | bytes) -> None:
        try:
            provider, record = decode_record(_decode(data))
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("health_message_ignored", error=str(exc))
            return
        self._on_record(provider, record)

    async def stop(self) -> None:
        task, pubsub = self._task, self._pubsub
        self._task = self._pubsub = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)
