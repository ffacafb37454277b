"""Rate budgets, the stream cap, and slots freed when a client goes away."""

from __future__ import annotations

import asyncio

import aiohttp

from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, two_providers, wait_until


async def test_burst_of_twice_the_limit_sends_exactly_the_limit_to_the_provider(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="tokens=8", GROQ_RATE_LIMIT="10")
    client = await gateway(**env)
    responses = await asyncio.gather(*(client.post("/chat", json=USER) for _ in range(20)))
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    assert await mock.count("tokens=8") == 10
    assert await mock.count("") == 10
    assert sorted(b["provider"] for b in bodies) == ["groq"] * 10 + ["openrouter"] * 10
    # Out-of-budget is "try the next one", not a failure: groq stays healthy.
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok"


async def test_no_provider_with_budget_is_a_429_with_retry_after(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, GROQ_RATE_LIMIT="2", OPENROUTER_RATE_LIMIT="3"))
    for _ in range(5):
        assert (await client.post("/chat", json=USER)).status == 200
    response = await client.post("/chat", json=USER)
    assert response.status == 429
    body = await response.json()
    assert body["error"]["type"] == "rate_limited"
    # groq refills one request every 30 s, openrouter every 20 s: the sooner one is announced.
    assert 19 <= int(response.headers["Retry-After"]) <= 20
    assert await mock.count("") == 5


async def test_global_limit_applies_to_providers_without_their_own(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(
        PROVIDER_ORDER="openai",
        OPENAI_API_KEY="sk-test-openai-000000",
        OPENAI_BASE_URL=mock.base(),
        RATE_LIMIT_REQUESTS_PER_MINUTE="3",
    )
    statuses = [(await client.post("/chat", json=USER)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_stream_cap_rejects_the_stream_beyond_the_limit(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(
        **two_providers(mock, groq="token_delay=0.1", MAX_CONCURRENT_STREAMS="2")
    )
    first = await client.post("/stream", json=USER)
    second = await client.post("/stream", json=USER)
    third = await client.post("/stream", json=USER)
    assert third.status == 429
    assert third.headers["Retry-After"] == "1"
    assert (await third.json())["error"]["type"] == "too_many_streams"
    metrics = await (await client.get("/metrics")).text()
    assert "modelrouter_active_streams 2.0" in metrics
    await first.read()
    await second.read()
    again = await client.post("/stream", json=USER)
    assert again.status == 200
    assert (await again.text()).endswith("data: [DONE]\n\n")


async def test_client_disconnect_mid_stream_frees_upstream_and_slot(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="stall_after=2", MAX_CONCURRENT_STREAMS="1"))
    url = str(client.make_url("/stream"))
    async with aiohttp.ClientSession() as session:
        response = await session.post(url, json=USER)
        assert response.status == 200
        await response.content.readuntil(b"\n\n")  # the first chunk arrived
        assert (await mock.stats())["open_streams"] == 1
        response.close()  # the client goes away mid-stream
    runtime = client.app[RUNTIME]

    async def released() -> bool:
        stats = await mock.stats()
        groq = runtime.system.router.providers["groq"]
        return stats["open_streams"] == 0 and groq.view().in_flight == 0

    await wait_until(released)
    metrics = await (await client.get("/metrics")).text()
    assert "modelrouter_active_streams 0.0" in metrics
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok", "a client leaving blames no provider"
    # The stream slot is free again: a new stream is admitted (it then stalls; cut it short).
    async with aiohttp.ClientSession() as session:
        response = await session.post(url, json=USER)
        assert response.status == 200
        response.close()


async def test_client_disconnect_while_waiting_for_chat_cancels_the_upstream_call(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="first_delay=30"))
    url = str(client.make_url("/chat"))
    runtime = client.app[RUNTIME]
    groq = runtime.system.router.providers["groq"]
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(url, json=USER))

        async def in_flight() -> bool:
            return groq.view().in_flight == 1

        await wait_until(in_flight)
        request.cancel()

    async def released() -> bool:
        return groq.view().in_flight == 0

    await wait_until(released)
    assert await mock.count("") == 0, "no fallback for a client that left"


async def test_in_process_stream_slot_is_held_for_the_whole_stream_however_long(
    gateway: Gateway, mock: Mock
) -> None:
    # The memory backend needs no lease TTL: a stream longer than STREAM_LEASE_TTL_SECONDS
    # keeps its slot until it ends, and no renewal task runs for it.
    env = two_providers(
        mock,
        groq="token_delay=0.1",
        MAX_CONCURRENT_STREAMS="1",
        STREAM_LEASE_TTL_SECONDS="0.2",
        STREAM_LEASE_RENEW_SECONDS="0.1",
    )
    client = await gateway(**env)
    first = await client.post("/stream", json=USER)
    await asyncio.sleep(0.5)  # well past the TTL, the first stream still runs
    second = await client.post("/stream", json=USER)
    assert second.status == 429
    assert (await first.text()).endswith("data: [DONE]\n\n")
    third = await client.post("/stream", json=USER)
    assert third.status == 200
    await third.read()
