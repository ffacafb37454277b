"""Hedged streams and continued streams, in process: who answers, what the client sees, what
is counted. (The fault suite checks the same from outside: connections, leases, the cap.)"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from modelrouter.mock.text import reply_tokens
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers, wait_until
from tests.scrape import scrape

HEDGED = {
    "HEDGE": "on",
    "HEDGE_AFTER_MS": "50",
    "HEDGE_MAX_EXTRA": "1",
    "FIRST_CHUNK_TIMEOUT": "20",
}


async def stream(
    client: TestClient[Any, Any], **headers: str
) -> tuple[int, list[tuple[str, str]], str]:
    response = await client.post("/stream", json=USER, headers=headers)
    body = await response.text()
    return response.status, parse_sse(body), body


def texts(events: list[tuple[str, str]]) -> list[str]:
    return [data for kind, data in events if kind == "message" and data != "[DONE]"]


async def hedges(client: TestClient[Any, Any]) -> dict[str, int]:
    health = await (await client.get("/health")).json()
    counts: dict[str, int] = health["hedges"]
    return counts


async def settled(client: TestClient[Any, Any], mock: Mock) -> None:
    """No attempt left in flight, no stream left open at the mock."""

    async def idle() -> bool:
        health = await (await client.get("/health")).json()
        in_flight = sum(p["in_flight"] for p in health["providers"].values())
        return in_flight == 0 and (await mock.stats())["open_streams"] == 0

    await wait_until(idle, timeout=5)


async def test_the_hedge_answers_when_the_first_attempt_is_slow(
    mock: Mock, gateway: Gateway
) -> None:
    client = await gateway(**two_providers(mock, "first_delay=5", "tokens=3", **HEDGED))
    code, events, _ = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(3)
    assert await hedges(client) == {"won": 1, "lost": 0, "skipped_cap": 0}
    await settled(client, mock)
    page = await scrape(client)
    assert page.value("modelrouter_hedges_total", outcome="won") == 1


async def test_the_first_attempt_wins_when_its_byte_comes_first(
    mock: Mock, gateway: Gateway
) -> None:
    env = two_providers(mock, "first_delay=0.3,tokens=2", "first_delay=5,tokens=6", **HEDGED)
    client = await gateway(**env)
    code, events, _ = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(2)
    assert await hedges(client) == {"won": 0, "lost": 1, "skipped_cap": 0}
    await settled(client, mock)


async def test_no_hedge_past_the_cap(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "first_delay=0.2,tokens=2", "tokens=6", **HEDGED)
    client = await gateway(**env | {"HEDGE_MAX_EXTRA": "0"})
    code, events, _ = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(2)
    assert await hedges(client) == {"won": 0, "lost": 0, "skipped_cap": 1}
    assert await mock.count("tokens=6") == 0


async def test_allow_hedges_only_the_requests_that_ask(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "first_delay=1,tokens=2", "tokens=6", **HEDGED)
    client = await gateway(**env | {"HEDGE": "allow"})
    code, events, _ = await stream(client)
    assert (code, texts(events)) == (200, reply_tokens(2))
    assert await mock.count("tokens=6") == 0
    code, events, _ = await stream(client, **{"x-modelrouter-hedge": "on"})
    assert (code, texts(events)) == (200, reply_tokens(6))
    assert await hedges(client) == {"won": 1, "lost": 0, "skipped_cap": 0}


async def test_when_both_racers_fail_the_walk_goes_on(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "first_delay=0.2,status=500", "status=503", **HEDGED)
    env |= {
        "PROVIDER_ORDER": "groq,openrouter,openai",
        "OPENAI_API_KEY": "sk-test-openai-0001",
        "OPENAI_BASE_URL": mock.base("tokens=4"),
        "OPENAI_RATE_LIMIT": "0",
    }
    client = await gateway(**env)
    code, events, _ = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(4)
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "blacklisted"
    assert health["providers"]["openrouter"]["state"] == "blacklisted"
    assert await mock.count("status=503") == 1  # the hedge was sent, and failed


async def test_a_hedged_stream_cut_mid_text_is_continued(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "tokens=40,reset_after=9", "tokens=40", **HEDGED)
    env |= {
        "HEDGE_AFTER_MS": "5000",  # groq's first byte comes long before: no hedge
        "CONTINUE_ON_CUT": "on",
        "OPENROUTER_CONTINUATION": "assistant_prefix",
    }
    client = await gateway(**env)
    code, events, body = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(40)
    assert ": continued from groq by openrouter" in body
    assert await hedges(client) == {"won": 0, "lost": 0, "skipped_cap": 0}


async def test_the_continue_header_refuses_a_continuation(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "tokens=40,reset_after=9", "tokens=40")
    env |= {"CONTINUE_ON_CUT": "on", "OPENROUTER_CONTINUATION": "assistant_prefix"}
    client = await gateway(**env)
    code, events, body = await stream(client, **{"x-modelrouter-continue": "off"})
    assert code == 200
    assert texts(events) == reply_tokens(40)[:9]
    assert events[-1][0] == "error"
    assert ": continued" not in body


async def test_a_continuation_that_fails_before_its_first_byte_leaves_the_error(
    mock: Mock, gateway: Gateway
) -> None:
    env = two_providers(mock, "tokens=40,reset_after=9", "status=500")
    env |= {"CONTINUE_ON_CUT": "on", "OPENROUTER_CONTINUATION": "assistant_prefix"}
    client = await gateway(**env)
    code, events, _ = await stream(client)
    assert code == 200
    assert texts(events) == reply_tokens(40)[:9]
    assert events[-1][0] == "error"
    page = await scrape(client)
    failed = {"from_provider": "groq", "to_provider": "openrouter", "outcome": "failed"}
    assert page.value("modelrouter_stream_continuations_total", **failed) == 1


async def test_a_hedge_takes_from_its_deployments_rate_budget(mock: Mock, gateway: Gateway) -> None:
    env = two_providers(mock, "first_delay=0.3,tokens=2", "tokens=6", **HEDGED)
    client = await gateway(**env | {"OPENROUTER_RATE_LIMIT": "1"})
    first = await stream(client)
    assert texts(first[1]) == reply_tokens(6)  # the hedge took openrouter's one request
    second = await stream(client)
    assert texts(second[1]) == reply_tokens(2)  # its budget is spent: no hedge, groq answers
    assert await mock.count("tokens=6") == 1
    page = await scrape(client)
    assert page.value("modelrouter_rate_limit_rejections_total", scope="openrouter") == 1
