"""Key changes pushed through the real Redis to every gateway sharing it (here two apps in one
process, on one PostgreSQL): a revocation by the admin API or the command line is refused by
the other at once; a message that is not a change is ignored; a lost subscription is made
again, and the keys cached meanwhile are read again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from modelrouter.cli import main
from modelrouter.tenants.push import channel_of
from modelrouter.web.runtime import RESOLVER
from modelrouter.web.tenancy import FEED
from tests.conftest import USER, Gateway, Mock, two_providers, wait_until
from tests.shared_state.conftest import prefix, rclient, redis_url
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

pytestmark = pytest.mark.redis
__all__ = ["prefix", "rclient", "redis_url"]  # the shared_state fixtures, used here

Client = Any


@pytest.fixture
async def heard(rclient: aioredis.Redis, prefix: str) -> AsyncIterator[Any]:
    """A subscription of the test's own to the keys channel: the push, seen from outside."""
    pubsub = rclient.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel_of(prefix))
    yield pubsub
    await pubsub.aclose()


async def next_change(pubsub: Any) -> Any:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=5)
            if message is not None:
                return message["data"]


@pytest.fixture
async def gateways(
    gateway: Gateway, mock: Mock, database: str, redis_url: str, prefix: str
) -> tuple[Client, Client]:
    """Two gateways on the test's PostgreSQL and Redis, both subscribed to the keys channel."""
    env = two_providers(
        mock,
        DATABASE_URL=database,
        ADMIN_API_KEY=ADMIN_KEY,
        API_KEY="static-client-key-0001",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
    )
    first, second = await gateway(**env), await gateway(**env)
    for client in (first, second):
        await client.app[FEED].subscribed.wait()
    return first, second


async def new_key(client: Client, name: str) -> tuple[str, str]:
    response = await client.post("/admin/keys", json={"name": name}, headers=AS_ADMIN)
    body = await response.json()
    return body["id"], body["key"]


async def status(client: Client, secret: str) -> int:
    response = await client.post("/chat", json=USER, headers={"Authorization": f"Bearer {secret}"})
    return int(response.status)


async def test_a_revocation_on_one_gateway_is_refused_by_the_other_at_once(
    heard: Any,
    gateways: tuple[Client, Client],
    database: str,
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = gateways
    key_id, secret = await new_key(first, "a")
    await next_change(heard)  # the creation
    assert await status(second, secret) == 200  # cached on the second, fresh for 30 s
    await first.delete(f"/admin/keys/{key_id}", headers=AS_ADMIN)
    assert key_id in await next_change(heard)  # the revocation, on its way
    await wait_until(lambda: _refused(second, secret), timeout=1.0)
    other_id, other = await new_key(first, "b")
    assert await status(second, other) == 200
    for name, value in [("DATABASE_URL", database), ("REDIS_URL", redis_url)]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    for name in ("API_KEY", "ADMIN_API_KEY", "PRICES_FILE", "HOST"):
        monkeypatch.delenv(name, raising=False)
    code = await asyncio.to_thread(main, ["keys", "revoke", other_id])
    assert code == 0
    await wait_until(lambda: _refused(second, other), timeout=1.0)


async def _refused(client: Client, secret: str) -> bool:
    return await status(client, secret) == 401


async def test_a_message_that_is_not_a_change_is_ignored(
    rclient: aioredis.Redis, heard: Any, gateways: tuple[Client, Client], prefix: str
) -> None:
    first, second = gateways
    await rclient.publish(channel_of(prefix), "not a change")
    await next_change(heard)
    key_id, secret = await new_key(first, "a")
    assert await status(second, secret) == 200
    await first.delete(f"/admin/keys/{key_id}", headers=AS_ADMIN)
    await wait_until(lambda: _refused(second, secret), timeout=1.0)


async def test_a_lost_subscription_is_made_again_and_cached_keys_are_read_again(
    rclient: aioredis.Redis, heard: Any, gateways: tuple[Client, Client], prefix: str
) -> None:
    first, second = gateways
    key_id, secret = await new_key(first, "a")
    assert await status(second, secret) == 200
    resolver = second.app[RESOLVER]
    asked = resolver.queries
    feed = second.app[FEED]
    clients = await rclient.client_list()
    name = f"modelrouter:{prefix}:keys:"
    ours = [c["id"] for c in clients if c.get("name", "").startswith(name)]
    assert ours  # both gateways' subscriptions
    feed.subscribed.clear()
    for client_id in ours:
        await rclient.client_kill_filter(_id=client_id)

    async def subscribed_again() -> bool:
        return feed.subscribed.is_set()

    await wait_until(subscribed_again)
    assert await status(second, secret) == 200
    assert resolver.queries == asked + 1  # read again: a change may have been missed
    await first.delete(f"/admin/keys/{key_id}", headers=AS_ADMIN)
    await wait_until(lambda: _refused(second, secret), timeout=1.0)
