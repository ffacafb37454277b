"""A virtual key's limits and budget hold on the routes that are not a chat: `/v1/embeddings`
and `/v1/messages/count_tokens` go through the same door as a chat (rpm, tpm, budget held
before, settled after), and an embedding reserves no output it will never write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from modelrouter.schemas import EmbedChat, EmbedInput, Message
from modelrouter.tenants.budget import output_bound, token_bound
from modelrouter.tenants.limits import DEFAULT_RESERVE_TOKENS
from tests.conftest import CLIENT_KEY, Gateway, Mock, two_providers
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN
from tests.test_messages_sdk import anthropic_env

Client = TestClient[Any, Any]
EMBED = {"model": "groq/mock-embed", "input": "hello there"}
COUNT = {"model": "anthropic/mock-model", "messages": [{"role": "user", "content": "hi"}]}


async def new_key(client: Client, **settings: Any) -> str:
    body = {"name": "other-routes", **settings}
    response = await client.post("/admin/keys", json=body, headers=AS_ADMIN)
    assert response.status == 201, await response.text()
    secret: str = (await response.json())["key"]
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_embeddings_count_against_the_keys_rpm(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(
        **two_providers(mock, DATABASE_URL=database, ADMIN_API_KEY=ADMIN_KEY, API_KEY=CLIENT_KEY)
    )
    secret = await new_key(client, rpm=2)
    statuses = [
        (await client.post("/v1/embeddings", json=EMBED, headers=bearer(secret))).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


async def test_count_tokens_counts_against_the_keys_rpm(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    env = anthropic_env(mock, DATABASE_URL=database, ADMIN_API_KEY=ADMIN_KEY)
    client = await gateway(**env)
    secret = await new_key(client, rpm=2, tpm=100)
    path = "/v1/messages/count_tokens"
    answers = [await client.post(path, json=COUNT, headers={"x-api-key": secret}) for _ in "abc"]
    assert [a.status for a in answers] == [200, 200, 429]
    assert (await answers[0].json())["input_tokens"] > 0
    assert (await answers[2].json())["error"]["type"] == "rate_limit_error"


async def test_a_budgeted_key_embeds_within_its_budget(
    gateway: Gateway, mock: Mock, database: str, tmp_path: Path
) -> None:
    """$100 per million input tokens: an embedding of "hello there" reserves its 19-token
    bound ($0.0000019), not 16,384 output tokens it will never write; a budget smaller than
    one reservation refuses with insufficient_quota."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"groq/*": {"input": 100.0, "output": 100.0}}))
    client = await gateway(
        **two_providers(
            mock, DATABASE_URL=database, ADMIN_API_KEY=ADMIN_KEY, PRICES_FILE=str(prices)
        )
    )
    secret = await new_key(client, budget_usd=0.01)
    served = await client.post("/v1/embeddings", json=EMBED, headers=bearer(secret))
    assert served.status == 200, await served.text()
    assert float(served.headers["x-modelrouter-cost-usd"]) > 0
    assert float(served.headers["x-modelrouter-budget-remaining-usd"]) < 0.01
    tiny = await new_key(client, name="tiny", budget_usd=0.000001)
    refused = await client.post("/v1/embeddings", json=EMBED, headers=bearer(tiny))
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "insufficient_quota"


def test_an_embedding_reserves_its_input_only() -> None:
    texts = EmbedChat(messages=[Message("user", "abc")], embed=EmbedInput(texts=["abc"]))
    assert output_bound(texts, 16_384) == 0
    assert token_bound(texts, DEFAULT_RESERVE_TOKENS) == 3 + 8
    tokens = EmbedChat(messages=[Message("user", "")], embed=EmbedInput(tokens=[[1, 2], [3]]))
    assert output_bound(tokens, 16_384) == 3
    assert token_bound(tokens, DEFAULT_RESERVE_TOKENS) == 8 + 3
