"""The fault matrix, hedged streams (HEDGE): a slow first attempt is hedged and the loser is
closed and released; no hedge after the first byte; HEDGE_MAX_EXTRA holds under a provider
slow on every request."""

from __future__ import annotations

import asyncio
from typing import Any

from modelrouter.mock.text import reply_tokens
from tests.conftest import parse_sse
from tests.faults.conftest import Gateways
from tests.faults.support import (
    AUTH,
    USER,
    GatewayProcess,
    MockProcess,
    chunks,
    fault_env,
    no_leaks,
    read_stream,
    session,
)
from tests.faults.test_disconnects import mock_streams

SLOW = "first_delay=30"  # groq's first attempt: no byte for far longer than any hedge delay


def hedged_env(mock: MockProcess, groq: str, openrouter: str, **extra: str) -> dict[str, str]:
    settings = {
        "HEDGE": "on",
        "HEDGE_MAX_EXTRA": "1",
        "FIRST_CHUNK_TIMEOUT": "20",
        "PROVIDER_TIMEOUT": "20",
        "MAX_OPERATION_TIMEOUT": "30",
    }
    return fault_env(mock, groq, openrouter, **{**settings, **extra})


async def stream(gateway: GatewayProcess, **headers: str) -> tuple[int, list[tuple[str, str]]]:
    async with (
        session() as client,
        client.post(f"{gateway.url}/stream", json=USER, headers={**AUTH, **headers}) as response,
    ):
        return response.status, await read_stream(response)


async def hedges(gateway: GatewayProcess) -> dict[str, Any]:
    page = await gateway.scrape()
    counted = {
        outcome: page.value("modelrouter_hedges_total", outcome=outcome) or 0
        for outcome in ("won", "lost", "skipped_cap")
    }
    assert (await gateway.health())["hedges"] == counted  # /health says the same
    return counted


async def test_a_hedge_answers_a_slow_first_attempt_whose_call_is_closed_and_released(
    mock: MockProcess, gateways: Gateways
) -> None:
    paced = "tokens=4,token_delay=0.4"  # the hedge: its answer takes a while after its first byte
    gateway = await gateways(hedged_env(mock, SLOW, paced, HEDGE_AFTER_MS="100"))
    async with (
        session() as client,
        client.post(f"{gateway.url}/stream", json=USER, headers=AUTH) as response,
    ):
        assert response.status == 200
        first = await response.content.readuntil(b"\n\n")
        assert first == b"data: Hello\n\n"  # openrouter's first byte reached the client...
        # ...and groq's call is closed now, while openrouter's answer still streams.
        await mock_streams(mock, 1)
        rest = parse_sse((first + await response.content.read()).decode())
    assert chunks(rest) == reply_tokens(4)  # openrouter's answer, whole, once
    assert rest[-1] == ("message", "[DONE]")
    assert await hedges(gateway) == {"won": 1, "lost": 0, "skipped_cap": 0}
    # Nothing held afterwards: no stream open at the mock, no attempt in flight (groq's ticket
    # back), no socket kept.
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_provider_failures_total") == 0  # the loser is not blamed
    assert (await gateway.health())["providers"]["groq"]["state"] == "ok"
    assert await mock.count(SLOW) == 1


async def test_no_hedge_is_sent_after_the_first_byte(mock: MockProcess, gateways: Gateways) -> None:
    # groq's first token comes at once, the rest slowly: the stream outlasts the hedge delay.
    slow_tail = "token_delay=0.7,tokens=4"
    env = hedged_env(mock, slow_tail, "tokens=5", HEDGE_AFTER_MS="1500")
    gateway = await gateways(env)
    code, events = await stream(gateway)
    assert code == 200
    assert chunks(events) == reply_tokens(4)
    assert await mock.count("tokens=5") == 0  # openrouter never called
    assert await hedges(gateway) == {"won": 0, "lost": 0, "skipped_cap": 0}
    await no_leaks(gateway, mock)


async def test_the_header_turns_hedging_off_for_one_request(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = hedged_env(mock, "first_delay=0.5,tokens=3", "tokens=6", HEDGE_AFTER_MS="50")
    gateway = await gateways(env)
    code, events = await stream(gateway, **{"x-modelrouter-hedge": "off"})
    assert code == 200
    assert chunks(events) == reply_tokens(3)  # groq's, waited for
    assert await mock.count("tokens=6") == 0
    await no_leaks(gateway, mock)


async def test_hedges_stay_within_max_extra_when_every_first_attempt_is_slow(
    mock: MockProcess, gateways: Gateways
) -> None:
    slow = "first_delay=1,tokens=3"
    env = hedged_env(
        mock,
        slow,
        "tokens=4",
        HEDGE_AFTER_MS="50",
        HEDGE_MAX_EXTRA="0.25",
        MAX_CONCURRENT_STREAMS="64",
    )
    gateway = await gateways(env)
    requests = 20
    answers = await asyncio.gather(*(stream(gateway) for _ in range(requests)))
    assert all(code == 200 and events[-1] == ("message", "[DONE]") for code, events in answers)
    counted = await hedges(gateway)
    sent = counted["won"] + counted["lost"]
    assert 1 <= sent <= 0.25 * requests  # each one counted against the requests before it
    assert sent + counted["skipped_cap"] == requests  # every request was due one
    assert await mock.count("tokens=4") == sent  # the upstream saw exactly the hedges sent
    assert await mock.count(slow) == requests
    await no_leaks(gateway, mock)
