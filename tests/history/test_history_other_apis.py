"""History rows of Anthropic's /v1/messages and OpenAI's /v1/embeddings: what the history can
read of them (the mapped messages, the usage, the cost), in the real PostgreSQL."""

from __future__ import annotations

from tests.conftest import Gateway, Mock, two_providers
from tests.history.conftest import wait_rows


async def test_messages_and_embeddings_are_written_with_what_history_reads(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    env = two_providers(
        mock,
        DATABASE_URL=database,
        HISTORY_FLUSH_SECONDS="0.05",
        PROVIDER_ORDER="groq",
    )
    client = await gateway(**env)
    body = {
        "model": "groq/llama-3.3-70b-versatile",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }
    answer = await client.post("/v1/messages", json=body, headers={"X-Request-ID": "req-msg"})
    assert answer.status == 200
    vectors = await client.post(
        "/v1/embeddings",
        json={"model": "groq/llama-3.3-70b-versatile", "input": ["one text", "two"]},
        headers={"X-Request-ID": "req-embed"},
    )
    assert vectors.status == 200
    found = {row["request_id"]: row for row in await wait_rows(database, 2)}
    message = found["req-msg"]
    assert (message["route"], message["status"], message["provider"]) == (
        "/v1/messages",
        200,
        "groq",
    )
    assert message["completion_tokens"] == 8
    assert message["answer"] == "Hello from the mock provider.\nSecond line"
    assert '"be brief"' in message["messages"]
    assert '"hello there"' in message["messages"]
    assert message["cost_nanos"] > 0
    embed = found["req-embed"]
    assert (embed["route"], embed["status"], embed["provider"]) == ("/v1/embeddings", 200, "groq")
    assert embed["prompt_tokens"] == 3  # the mock's count: a word a token
    assert embed["completion_tokens"] == 0
    assert '"one text"' in embed["messages"]
