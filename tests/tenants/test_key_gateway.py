"""Virtual keys through one gateway, on the real PostgreSQL: per-key rpm and streams give 429s
in each route family's format; the allow-list filters the plan and /v1/models (the `openai`
SDK raises PermissionDeniedError); the response cache is scoped per key; a known key costs
no database query per request; with PostgreSQL away known keys keep working and unknown ones
get a 503 with Retry-After while /ready stays 200."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient

from modelrouter.tenants import new_secret
from modelrouter.web.admin import KEYS
from modelrouter.web.runtime import RUNTIME
from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers, wait_until
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN
from tests.tenants.test_key_lookup import cut_off

Client = TestClient[Any, Any]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def keyed(gateway: Gateway, mock: Mock, database: str, groq: str = "", **env: str) -> Client:
    return await gateway(
        **two_providers(
            mock, groq, DATABASE_URL=database, ADMIN_API_KEY=ADMIN_KEY, API_KEY=CLIENT_KEY, **env
        )
    )


async def new_key(client: Client, name: str = "k", **settings: Any) -> tuple[str, str]:
    response = await client.post("/admin/keys", json={"name": name, **settings}, headers=AS_ADMIN)
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["id"], body["key"]


async def metrics(client: Client) -> str:
    return await (await client.get("/metrics")).text()


# -- limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body_type"),
    [("/chat", ("error", "type")), ("/v1/chat/completions", ("error", "code"))],
)
async def test_over_its_rpm_a_key_gets_a_429_with_retry_after(
    gateway: Gateway, mock: Mock, database: str, path: str, body_type: tuple[str, str]
) -> None:
    client = await keyed(gateway, mock, database)
    _, secret = await new_key(client, rpm=2)
    statuses = [(await client.post(path, json=USER, headers=bearer(secret))).status for _ in "ab"]
    assert statuses == [200, 200]
    over = await client.post(path, json=USER, headers=bearer(secret))
    assert over.status == 429
    assert 1 <= int(over.headers["Retry-After"]) <= 30
    assert over.headers["x-should-retry"] == "true"
    outer, field = body_type
    assert (await over.json())[outer][field] in ("rate_limited", "rate_limit_exceeded")
    assert (await client.post(path, json=USER, headers=bearer(CLIENT_KEY))).status == 200
    assert 'modelrouter_key_rejections_total{reason="rate_limited"} 1.0' in await metrics(client)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/stream", USER), ("/v1/chat/completions", {**USER, "stream": True})],
)
async def test_max_parallel_streams_holds_on_both_stream_routes(
    gateway: Gateway, mock: Mock, database: str, path: str, body: dict[str, Any]
) -> None:
    client = await keyed(gateway, mock, database, groq="stall_after=2")
    _, secret = await new_key(client, max_parallel_streams=1)
    url = str(client.make_url(path))
    async with aiohttp.ClientSession(headers=bearer(secret)) as session:
        first = await session.post(url, json=body)
        assert first.status == 200
        await first.content.readuntil(b"\n\n")  # streaming, and stalled upstream
        second = await session.post(url, json=body)
        assert second.status == 429
        assert "Retry-After" in second.headers
        assert (await client.post("/chat", json=USER, headers=bearer(secret))).status == 200
        first.close()  # the client goes away: its lease goes back

        async def admitted() -> bool:
            again = await session.post(url, json=body)
            again.close()
            return again.status == 200

        await wait_until(admitted)
    assert 'modelrouter_key_rejections_total{reason="streams"}' in await metrics(client)


async def test_tpm_refuses_what_does_not_fit_and_gives_back_what_was_not_used(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed(gateway, mock, database)
    _, secret = await new_key(client, tpm=200)
    ask = {"messages": [{"role": "user", "content": "x" * 32}], "max_tokens": 40}  # 80
    # Each answer uses 9 of its 80 reserved: the rest comes back at its end, so five fit in
    # 200 (without the give-back, the third would not).
    for _ in range(5):
        response = await client.post("/v1/chat/completions", json=ask, headers=bearer(secret))
        assert response.status == 200, await response.text()
    big = {"messages": [{"role": "user", "content": "x" * 150}], "max_tokens": 40}  # 198
    over = await client.post("/v1/chat/completions", json=big, headers=bearer(secret))
    assert over.status == 429
    assert (await over.json())["error"]["code"] == "tokens_rate_limited"


# -- the allow-list ----------------------------------------------------------------------------
async def test_the_allow_list_filters_the_plan(gateway: Gateway, mock: Mock, database: str) -> None:
    client = await keyed(gateway, mock, database, groq="status=500")
    _, groq_only = await new_key(client, models=["groq/*"])
    refused = await client.post(
        "/chat", json={**USER, "model": "openrouter/any-model"}, headers=bearer(groq_only)
    )
    assert refused.status == 403
    body = await refused.json()
    assert body["error"]["type"] == "model_not_allowed"
    assert "openrouter/any-model" in body["error"]["message"]
    # `auto` is the configured order filtered: groq fails, and openrouter is not the key's.
    auto = await client.post("/chat", json=USER, headers=bearer(groq_only))
    assert auto.status == 502
    _, both = await new_key(client, "both", models=["groq/*", "openrouter/*"])
    served = await client.post("/chat", json=USER, headers=bearer(both))
    assert served.status == 200
    assert (await served.json())["provider"] == "openrouter"
    text = await metrics(client)
    assert 'modelrouter_key_rejections_total{reason="model_not_allowed"} 1.0' in text


async def test_models_lists_only_what_the_key_may_use(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed(gateway, mock, database)
    _, secret = await new_key(client, models=["groq/*"])
    listed = await (await client.get("/v1/models", headers=bearer(secret))).json()
    assert [m["id"] for m in listed["data"]] == ["auto", "groq/llama-3.3-70b-versatile"]
    everything = await (await client.get("/v1/models", headers=bearer(CLIENT_KEY))).json()
    assert len(everything["data"]) == 3
    hidden = await client.get(
        "/v1/models/openrouter/meta-llama/llama-3.3-70b-instruct", headers=bearer(secret)
    )
    assert hidden.status == 404
    shown = await client.get("/v1/models/groq/llama-3.3-70b-versatile", headers=bearer(secret))
    assert shown.status == 200
    # A model the allow-list names exactly routes though not configured: it is listed too
    # (not a pattern, nor a provider that is not enabled, nor a bare name).
    names = ["groq/llama-3.1-8b-instant", "groq/x*", "nosuch/model", "gpt-4o"]
    _, exact = await new_key(client, "exact", models=names)
    listed = await (await client.get("/v1/models", headers=bearer(exact))).json()
    assert [m["id"] for m in listed["data"]] == ["groq/llama-3.1-8b-instant"]
    one = await client.get("/v1/models/groq/llama-3.1-8b-instant", headers=bearer(exact))
    assert (await one.json())["id"] == "groq/llama-3.1-8b-instant"


async def test_the_openai_sdk_raises_permission_denied_outside_the_allow_list(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed(gateway, mock, database)
    _, secret = await new_key(client, models=["groq/*"])
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await sdk.chat.completions.create(
            model="openrouter/meta-llama/llama-3.3-70b-instruct", messages=[USER["messages"][0]]
        )
    assert denied.value.code == "model_not_allowed"
    completion = await sdk.chat.completions.create(model="auto", messages=[USER["messages"][0]])
    assert completion.model.startswith("groq/")


# -- the cache scope ---------------------------------------------------------------------------
async def cached(client: Client, secret: str) -> str:
    response = await client.post("/chat", json=USER, headers=bearer(secret))
    assert response.status == 200
    return response.headers["x-modelrouter-cache"]


@pytest.mark.parametrize(
    ("scope", "other_key"), [("key", "miss"), ("team", "hit"), ("global", "hit")]
)
async def test_the_cache_is_scoped_per_key_by_default(
    gateway: Gateway, mock: Mock, database: str, scope: str, other_key: str
) -> None:
    client = await keyed(gateway, mock, database, CACHE_MODE="all", CACHE_SCOPE=scope)
    _, first = await new_key(client, "a", team="t")
    _, second = await new_key(client, "b", team="t")
    assert await cached(client, first) == "miss"
    assert await cached(client, first) == "hit"
    assert await cached(client, second) == other_key
    static = "hit" if scope == "global" else "miss"  # the API_KEY list is one scope of its own
    assert await cached(client, CLIENT_KEY) == static
    assert await cached(client, CLIENT_KEY) == "hit"


# -- the database ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def counting(client: Client) -> AsyncIterator[list[int]]:
    """Counts the key store's connections taken: every query of the store takes one."""
    store = client.app[KEYS]
    taken = [0]
    own = store._conn

    def conn() -> Any:
        taken[0] += 1
        return own()

    store._conn = conn  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        del store._conn


async def test_a_known_key_costs_no_database_query_per_request(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed(gateway, mock, database)
    _, secret = await new_key(client, rpm=1000, tpm=1_000_000, max_parallel_streams=10)
    assert (await client.post("/chat", json=USER, headers=bearer(secret))).status == 200
    async with counting(client) as queries:
        for path, body in [("/chat", USER), ("/stream", USER), ("/v1/models", None)] * 20:
            method = client.get if body is None else client.post
            response = await method(path, json=body, headers=bearer(secret))
            assert response.status == 200
            await response.read()
        assert queries == [0]
        unknown = await client.post("/chat", json=USER, headers=bearer(new_secret()))
        assert unknown.status == 401
        assert queries == [1]  # what the count sees: an unknown key's one lookup


async def test_with_postgresql_away_known_keys_work_and_unknown_ones_get_503(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed(gateway, mock, database)
    _, known = await new_key(client)
    assert (await client.post("/chat", json=USER, headers=bearer(known))).status == 200
    await cut_off(database)
    client.app[RUNTIME].resolver.stale()  # as after KEY_CACHE_SECONDS: it asks again
    for _ in range(3):
        assert (await client.post("/chat", json=USER, headers=bearer(known))).status == 200
    unknown = await client.post("/v1/chat/completions", json=USER, headers=bearer(new_secret()))
    assert unknown.status == 503
    assert unknown.headers["Retry-After"] == "1"
    assert (await unknown.json())["error"]["code"] == "keys_unavailable"
    assert (await client.get("/ready")).status == 200
    assert (await client.post("/chat", json=USER, headers=bearer(CLIENT_KEY))).status == 200
