"""The virtual keys' lookups in the app: the resolver (`tenants.lookup`) and the push of key
changes between replicas (`tenants.push`), for the app's lifetime.

With DATABASE_URL the key store exists (`admin.keys_ctx`) and requests may carry virtual keys.
Each change the store commits here reaches this process's cache at once and, with REDIS_URL,
every replica's through the push; without Redis, other processes catch up within
KEY_CACHE_SECONDS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from modelrouter.tenants.lookup import KeyResolver
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

    async def changed(change: KeyChange) -> None:
        resolver.changed(change)

    store.on_change = changed
    yield
