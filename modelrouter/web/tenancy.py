"""The virtual keys' lookups in the app: the resolver (`tenants.lookup`) and the push of key
changes between replicas (`tenants.push`), for the app's lifetime.

With DATABASE_URL the key store exists (`admin.keys_ctx`) and requests may carry virtual keys.
Each change the store commits here reaches this process's cache at once and, with REDIS_URL,
every replica's through the push; without Redis, other processes catch up within
KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from modelrouter.config import Settings
from modelrouter.state.connect import connect
from modelrouter.tenants.lookup import KeyResolver
from modelrouter.tenants.push import KeyFeed, channel_of
from modelrouter.tenants.store import KeyChange
from modelrouter.web.admin import KEYS
from modelrouter.web.runtime import RESOLVER, SETTINGS


async def resolver_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app.get(KEYS)
    if store is None:
        yield
        return
    resolver = app[RESOLVER] = KeyResolver(store, ttl=settings.tenants.key_cache_seconds)
    feed = None if settings.redis_url is None else key_feed(settings, resolver)

    async def changed(change: KeyChange) -> None:
        resolver.changed(change)  # this process at once, whatever happens to the push
        if feed is not None:
            await feed.publish(change)

    store.on_change = changed
    if feed is not None:
        feed.start()
    try:
        yield
    finally:
        if feed is not None:
            await feed.stop()
            await feed.close()


def key_feed(settings: Settings, resolver: KeyResolver) -> KeyFeed:
    assert settings.redis_url is not None
    name = f"modelrouter:{settings.redis.key_prefix}:keys:{os.getpid()}"
    client = connect(settings.redis_url, settings.redis, name=name)
    return KeyFeed(
        client,
        channel_of(settings.redis.key_prefix),
        on_change=resolver.changed,
        on_gap=resolver.stale,
    )
