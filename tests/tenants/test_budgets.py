"""Budgets in one gateway (memory state, real PostgreSQL): a key with `budget_usd` is served
while its reservations fit, then refused with OpenAI's `insufficient_quota`; every answer says
what is left; spend goes to PostgreSQL with the history's figure; /admin/spend and /v1/spend
report it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from modelrouter.tenants.budget import window
from modelrouter.web.openapi import openapi_document
from tests.conftest import Gateway, Mock, parse_sse, two_providers, wait_until
from tests.history.conftest import rows, wait_rows
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

# 10 output tokens at $100 per million: $0.001 a request (input is free); a request of "hi"
# reserves (2 bytes + 8 + 10 tokens) at $100/M = $0.002.
PRICES = {
    "groq/*": {"input": 0.0, "output": 100.0},
    "openrouter/*": {"input": 0.0, "output": 100.0},
}
ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
SPEC = "tokens=10"


@pytest.fixture
def prices_file(tmp_path: Path) -> str:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return str(path)


async def budget_gateway(
    gateway: Gateway, mock: Mock, database: str, prices_file: str, **env: str
) -> TestClient[Any, Any]:
    return await gateway(
        **two_providers(
            mock,
            SPEC,
            SPEC,
            DATABASE_URL=database,
            ADMIN_API_KEY=ADMIN_KEY,
            PRICES_FILE=prices_file,
            HISTORY_FLUSH_SECONDS="0.05",
            GROQ_MODEL="mock-a",  # not in the bundled table: priced by PRICES_FILE's `groq/*`
            OPENROUTER_MODEL="mock-b",
            **env,
        )
    )


async def new_key(client: TestClient[Any, Any], **settings: Any) -> dict[str, Any]:
    body = {"name": "budgeted", "budget_usd": 0.01, **settings}
    response = await client.post("/admin/keys", json=body, headers=AS_ADMIN)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


async def spend_rows(database: str) -> list[Any]:
    return await rows(database, "SELECT * FROM modelrouter_spend ORDER BY created_at")


async def test_a_budget_serves_what_it_pays_for_then_refuses_with_insufficient_quota(
    gateway: Gateway, mock: Mock, database: str, prices_file: str
) -> None:
    client = await budget_gateway(gateway, mock, database, prices_file)
    key = await new_key(client, budget_period="day")
    left = []
    for _ in range(9):
        response = await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))
        assert response.status == 200, await response.text()
        assert response.headers["x-modelrouter-cost-usd"] == "0.001"
        left.append(response.headers["x-modelrouter-budget-remaining-usd"])
    assert left == [f"0.00{9 - i}" if i < 9 else "0" for i in range(9)]
    # $0.001 left: the reservation ($0.002) does not fit any more.
    refused = await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))
    assert refused.status == 429
    assert refused.headers["x-should-retry"] == "false"
    error = (await refused.json())["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    reset = window("day", datetime.now(UTC)).reset_at
    assert reset is not None
    assert f"{reset:%Y-%m-%dT%H:%M:%SZ}" in error["message"]
    # Not spent: the message says why this request does not fit, and what to do.
    assert "may cost up to 0.002 USD" in error["message"]
    assert (
        "more than the 0.001 USD this key's budget of 0.01 USD per day has left"
        in (error["message"])
    )
    assert "its prompt alone may cost more" in error["message"], "10 prompt tokens: $0.001"
    # The seed's route refuses in its own error shape.
    seed = await client.post("/chat", json=ASK, headers=bearer(key))
    assert seed.status == 429
    assert (await seed.json())["error"]["type"] == "insufficient_quota"
    history = await wait_rows(database, 11)
    served = [r for r in history if r["status"] == 200]
    await wait_until(lambda: _count(database, len(served)))
    spent = await spend_rows(database)
    assert sum(r["cost_nanos"] for r in spent) == sum(r["cost_nanos"] for r in served) == 9_000_000
    assert {r["key_id"] for r in spent} == {key["id"]}
    # The largest max_tokens that fits is named, and it is served: $0.005 is 50 tokens at $100
    # per million, less the prompt's 10.
    small = await new_key(client, name="small", budget_usd=0.005)
    big = {**ASK, "max_tokens": 1000}
    refused = await client.post("/v1/chat/completions", json=big, headers=bearer(small))
    assert "send max_tokens of at most 40;" in (await refused.json())["error"]["message"]
    fits = {**ASK, "max_tokens": 40}
    answered = await client.post("/v1/chat/completions", json=fits, headers=bearer(small))
    assert answered.status == 200, await answered.text()
    nothing = await new_key(client, name="nothing", budget_usd=0)
    refused = await client.post("/v1/chat/completions", json=ASK, headers=bearer(nothing))
    message = (await refused.json())["error"]["message"]
    assert message.startswith("this key's budget of 0 USD per total is spent"), message


async def _count(database: str, n: int) -> bool:
    try:
        return len(await spend_rows(database)) >= n
    except asyncpg.UndefinedTableError:  # the table is made by the first write
        return False


async def test_a_stream_says_what_is_left_after_its_reservation_and_settles_its_cost(
    gateway: Gateway, mock: Mock, database: str, prices_file: str
) -> None:
    client = await budget_gateway(gateway, mock, database, prices_file)
    key = await new_key(client)
    response = await client.post(
        "/v1/chat/completions", json={**ASK, "stream": True}, headers=bearer(key)
    )
    assert response.status == 200
    assert response.headers["x-modelrouter-budget-remaining-usd"] == "0.008"  # $0.01 - $0.002
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    # Settled at its cost: the next whole answer sees $0.01 - $0.001 - $0.001.
    after = await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))
    assert after.headers["x-modelrouter-budget-remaining-usd"] == "0.008"


async def test_concurrent_requests_never_spend_past_the_budget(
    gateway: Gateway, mock: Mock, database: str, prices_file: str
) -> None:
    client = await budget_gateway(gateway, mock, database, prices_file)
    key = await new_key(client)
    results = await asyncio.gather(
        *(client.post("/chat", json=ASK, headers=bearer(key)) for _ in range(40))
    )
    statuses = [r.status for r in results]
    assert set(statuses) <= {200, 429}
    served = statuses.count(200)
    assert 5 <= served <= 10  # each holds $0.002 until it settles at $0.001
    await wait_until(lambda: _count(database, served))
    assert sum(r["cost_nanos"] for r in await spend_rows(database)) == served * 1_000_000


async def test_an_unpriced_model_is_refused_to_a_budgeted_key(
    gateway: Gateway, mock: Mock, database: str, tmp_path: Path
) -> None:
    only_groq = tmp_path / "groq.json"
    only_groq.write_text(json.dumps({"groq/*": PRICES["groq/*"]}))
    client = await budget_gateway(gateway, mock, database, str(only_groq))
    key = await new_key(client)
    unpriced = await client.post(
        "/v1/chat/completions", json={**ASK, "model": "openrouter/x"}, headers=bearer(key)
    )
    assert unpriced.status == 403
    assert (await unpriced.json())["error"]["code"] == "model_unpriced"
    unbudgeted = await new_key(client, name="free", budget_usd=None)
    free = await client.post(
        "/v1/chat/completions", json={**ASK, "model": "openrouter/x"}, headers=bearer(unbudgeted)
    )
    assert free.status == 200


async def test_spend_reports_group_by_each_dimension_and_a_client_sees_its_own(
    gateway: Gateway, mock: Mock, database: str, prices_file: str
) -> None:
    client = await budget_gateway(gateway, mock, database, prices_file)
    key = await new_key(client, team="search", budget_period="month")
    for model in ("groq/a", "openrouter/b", "groq/a"):
        answer = await client.post("/chat", json={**ASK, "model": model}, headers=bearer(key))
        assert answer.status == 200
    await wait_until(lambda: _count(database, 3))
    report = await client.get("/admin/spend?group_by=key", headers=AS_ADMIN)
    assert report.status == 200, await report.text()
    body = await report.json()
    (row,) = body["data"]
    assert row["group"] == key["id"]
    assert (row["name"], row["team"], row["budget_usd"], row["budget_period"]) == (
        "budgeted",
        "search",
        0.01,
        "month",
    )
    assert (row["spend_usd"], row["requests"], row["period_spend_usd"]) == (0.003, 3, 0.003)
    assert row["reset_at"].endswith("T00:00:00Z")
    assert set(body) == {"data", "from", "to", "uncounted_rows"}
    assert body["uncounted_rows"] == 0, "no spool: every row counted"
    by_model = await (await client.get("/admin/spend?group_by=model", headers=AS_ADMIN)).json()
    assert {r["group"]: r["requests"] for r in by_model["data"]} == {"groq/a": 2, "openrouter/b": 1}
    assert {frozenset(r) for r in by_model["data"]} == {
        frozenset({"group", "spend_usd", "requests"})
    }
    for group in ("team", "provider", "day"):
        grouped = await client.get(f"/admin/spend?group_by={group}", headers=AS_ADMIN)
        assert grouped.status == 200
        assert sum(r["requests"] for r in (await grouped.json())["data"]) == 3
    mine = await client.get("/v1/spend", headers=bearer(key))
    assert mine.status == 200
    (own,) = (await mine.json())["data"]
    assert (own["group"], own["spend_usd"], own["requests"], own["budget_usd"]) == (
        key["id"],
        0.003,
        3,
        0.01,
    )


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group_by=user", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("limit=3", "limit"),
    ],
)
async def test_bad_spend_parameters_are_400s(
    gateway: Gateway, mock: Mock, database: str, prices_file: str, query: str, param: str
) -> None:
    client = await budget_gateway(gateway, mock, database, prices_file)
    response = await client.get(f"/admin/spend?{query}", headers=AS_ADMIN)
    assert response.status == 400
    assert param in (await response.text())
    assert response.headers["X-Request-ID"]
    # A client key does not open /admin/spend.
    key = await new_key(client)
    assert (await client.get("/admin/spend", headers=bearer(key))).status == 401


async def test_spend_per_key_is_in_the_metrics_only_when_asked(
    gateway: Gateway, mock: Mock, database: str, prices_file: str
) -> None:
    labelled = await budget_gateway(gateway, mock, database, prices_file, METRICS_KEY_LABELS="1")
    key = await new_key(labelled, team="search")
    assert (await labelled.post("/chat", json=ASK, headers=bearer(key))).status == 200
    text = await (await labelled.get("/metrics")).text()
    assert f'modelrouter_key_spend_usd_total{{key="{key["id"]}",team="search"}} 0.001' in text
    plain = await budget_gateway(gateway, mock, database, prices_file)
    other = await new_key(plain, name="unlabelled")
    assert (await plain.post("/chat", json=ASK, headers=bearer(other))).status == 200
    assert "modelrouter_key_spend_usd_total{" not in await (await plain.get("/metrics")).text()


def test_the_spend_routes_are_in_the_openapi_document() -> None:
    document = openapi_document(auth=True)
    admin = document["paths"]["/admin/spend"]["get"]
    assert admin["security"] == [{"admin": []}]
    assert {p["name"] for p in admin["parameters"]} >= {"group_by", "from", "to"}
    assert "/v1/spend" in document["paths"]
    assert set(document["components"]["schemas"]["SpendReport"]["properties"]) == {
        "data",
        "from",
        "to",
        "uncounted_rows",
    }


async def test_v1_spend_without_a_database_is_a_404(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY="client-key-0001"))
    response = await client.get("/v1/spend", headers={"Authorization": "Bearer client-key-0001"})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "spend_off"
