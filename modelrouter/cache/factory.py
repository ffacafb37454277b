"""Building the configured cache: none (CACHE_MODE=off), in memory, or on REDIS_URL."""

from __future__ import annotations

import os
from collections.abc import Callable

from modelrouter.actors.messages import Route
from modelrouter.cache.front import ResponseCache
from modelrouter.cache.key import Chain
from modelrouter.config import Settings
from modelrouter.observability import Metrics
from modelrouter.schemas import ChatRequest


def build_cache(
    settings: Settings,
    metrics: Metrics,
    *,
    route: Callable[[Route], None],
    chain: Callable[[ChatRequest, tuple[str, ...]], Chain | None],
) -> ResponseCache | None:
    cache = settings.cache
    if not cache.enabled:
        return None
    remote = None
    if settings.redis_url is not None:
        from modelrouter.cache.redis_store import RedisStore  # noqa: PLC0415
        from modelrouter.state.connect import connect  # noqa: PLC0415 - memory needs no redis

        redis = settings.redis
        name = f"modelrouter-cache:{redis.key_prefix}:{os.getpid()}"
        remote = RedisStore(
            connect(settings.redis_url, redis, name=name),
            metrics,
            prefix=redis.key_prefix,
            timeout=redis.timeout,
            ttl=cache.ttl,
            lease=cache.lock_seconds,
        )
    return ResponseCache(cache, metrics, route=route, chain=chain, remote=remote)
