"""A hedged stream's outcome and a continued stream's cut deployment, in the history row
(migration 4) and through the history API; the loser's prompt is in the request's cost."""

from __future__ import annotations

from modelrouter.mock.text import reply_tokens
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers
from tests.history.conftest import wait_rows

HEDGED = {
    "HEDGE": "on",
    "HEDGE_AFTER_MS": "50",
    "HEDGE_MAX_EXTRA": "1",
    "FIRST_CHUNK_TIMEOUT": "20",
}


async def test_a_hedged_and_a_continued_stream_say_so_in_their_rows(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    hedged = two_providers(mock, "first_delay=5", "tokens=3", DATABASE_URL=database, **HEDGED)
    client = await gateway(**hedged | {"HISTORY_FLUSH_SECONDS": "0.05"})
    response = await client.post("/stream", json=USER, headers={"X-Request-ID": "req-hedged"})
    assert response.status == 200
    await response.read()
    continued = two_providers(mock, "tokens=20,reset_after=7", "tokens=20", DATABASE_URL=database)
    continued |= {
        "CONTINUE_ON_CUT": "on",
        "OPENROUTER_CONTINUATION": "assistant_prefix",
        "HISTORY_FLUSH_SECONDS": "0.05",
    }
    client_continued = await gateway(**continued)
    response = await client_continued.post(
        "/stream", json=USER, headers={"X-Request-ID": "req-continued"}
    )
    events = parse_sse(await response.text())
    assert [data for _, data in events] == [*reply_tokens(20), "[DONE]"]
    plain = await client_continued.post("/chat", json=USER, headers={"X-Request-ID": "req-plain"})
    assert plain.status == 200
    found = {row["request_id"]: row for row in await wait_rows(database, 3)}
    row = found["req-hedged"]
    assert (row["provider"], row["hedge"], row["continued_from"]) == ("openrouter", "won", None)
    assert row["usage_estimated"] is True  # groq's cancelled attempt: its prompt, estimated
    assert (found["req-plain"]["hedge"], found["req-plain"]["continued_from"]) == (None, None)
    row = found["req-continued"]
    assert (row["provider"], row["hedge"], row["continued_from"]) == ("openrouter", None, "groq")
    assert (row["attempts"], row["completion_tokens"]) == (2, 13)  # the continuation's 13
    shown = await (await client.get("/v1/history/req-hedged")).json()
    assert shown["hedge"] == "won"


async def test_a_loser_that_reported_its_prompt_is_billed_from_it(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    # Anthropic's stream says its prompt tokens first (message_start): this one then holds.
    env = two_providers(mock, openrouter="tokens=3", DATABASE_URL=database, **HEDGED)
    env |= {
        "PROVIDER_ORDER": "anthropic,openrouter",
        "ANTHROPIC_API_KEY": "anthropic-test-key-0001",
        "ANTHROPIC_BASE_URL": mock.base("stall_after=0", flavour="anthropic"),
        "HISTORY_FLUSH_SECONDS": "0.05",
    }
    client = await gateway(**env)
    response = await client.post("/stream", json=USER, headers={"X-Request-ID": "req-billed"})
    assert [data for _, data in parse_sse(await response.text())] == [*reply_tokens(3), "[DONE]"]
    (row,) = await wait_rows(database, 1)
    assert (row["provider"], row["hedge"]) == ("openrouter", "won")
    assert row["usage_estimated"] is False  # both usages as their upstreams counted them
    assert row["cost_nanos"] > 0
