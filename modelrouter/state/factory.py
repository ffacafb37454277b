"""Choosing the backend: REDIS_URL set -> RedisState, else MemoryState."""

from __future__ import annotations

import os

from modelrouter.config import Settings
from modelrouter.observability import Metrics
from modelrouter.state.base import SharedState
from modelrouter.state.memory import MemoryState


def create_state(settings: Settings, metrics: Metrics) -> SharedState:
    """The configured backend, not yet started (call `await state.start()`)."""
    if settings.redis_url is None:
        metrics.set_state_backend("memory")
        return MemoryState()
    from modelrouter.state.connect import connect  # noqa: PLC0415 - memory needs no redis
    from modelrouter.state.redis import RedisState  # noqa: PLC0415

    name = f"modelrouter:{settings.redis.key_prefix}:{os.getpid()}"
    client = connect(settings.redis_url, settings.redis, name=name)
    return RedisState(client, settings=settings.redis, metrics=metrics)
