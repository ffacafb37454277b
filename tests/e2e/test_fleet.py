"""Limits and health hold for the fleet, whichever replica nginx picks for each request."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import USER, Mock, parse_sse
from tests.e2e.conftest import StartStack
from tests.e2e.stack import MockProvider

pytestmark = pytest.mark.e2e


async def send(session: aiohttp.ClientSession, url: str, path: str) -> tuple[int, bytes]:
    async with session.post(f"{url}{path}", json=USER) as response:
        return response.status, await response.read()


async def test_a_provider_rate_limit_holds_for_the_fleet_through_nginx(
    stack: StartStack, mock_provider: MockProvider
) -> None:
    fleet = stack(PROVIDER_ORDER="groq", GROQ_RATE_LIMIT="20")
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(send(session, fleet.url, "/chat") for _ in range(50)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] * 20 + [429] * 30
        assert await Mock(mock_provider.url, session).count() == 20
    served = fleet.served_by(at_least=50)
    assert 15 <= served.count("a") <= 35, f"nginx spreads the requests: {served}"


async def test_the_stream_cap_holds_for_the_fleet_through_nginx(
    stack: StartStack, mock_provider: MockProvider
) -> None:
    # Each stream holds its slot for about a second: 10 tokens, 0.1 s apart.
    slow = mock_provider.base("token_delay=0.1,tokens=10")
    fleet = stack(MAX_CONCURRENT_STREAMS="4", GROQ_BASE_URL=slow, PROVIDER_ORDER="groq")
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(send(session, fleet.url, "/stream") for _ in range(12)))
    finished = [body for status, body in results if status == 200]
    assert sorted(status for status, _ in results) == [200] * 4 + [429] * 8
    for body in finished:
        assert parse_sse(body.decode())[-1] == ("message", "[DONE]")
    assert set(fleet.served_by(at_least=12)) == {"a", "b"}


async def test_a_blacklist_set_by_one_replica_is_seen_by_the_other_within_100_ms(
    stack: StartStack, mock_provider: MockProvider
) -> None:
    fleet = stack(GROQ_BASE_URL=mock_provider.base("status=500"))
    first, other = fleet.replicas
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{first.url}/chat", json=USER) as response:
            assert (await response.json())["provider"] == "openrouter"  # groq failed first
        answered = time.monotonic()
        while True:
            async with session.get(f"{other.url}/health") as response:
                groq = (await response.json())["providers"]["groq"]
            if groq["state"] == "blacklisted":
                break
            assert time.monotonic() - answered < 2.0, "the other replica never heard"
        seen = time.monotonic() - answered
    print(f"the other replica's /health said blacklisted {seen * 1000:.1f} ms after the answer")
    assert groq["last_reason"] == "server_error"
    assert seen <= 0.1
