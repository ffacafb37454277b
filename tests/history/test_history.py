"""History in the real PostgreSQL on 127.0.0.1:5432: rows for successes and failures, read back
through the API by their own client only, and requests unaffected while the database is away.

Each test gets a database of its own, created and dropped by `tests/history/conftest.py`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from modelrouter.config import HistorySettings, load_settings
from modelrouter.history.schema import LATEST, migrate
from modelrouter.history.writer import HistoryWriter
from modelrouter.observability import Metrics
from modelrouter.web import create_app
from modelrouter.web.runtime import key_id
from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until
from tests.history.conftest import admin, count_rows, record, rows, wait_rows
from tests.scrape import scrape

KEY_A, KEY_B = "client-key-aaaa-0001", "client-key-bbbb-0002"
AS_A = {"Authorization": f"Bearer {KEY_A}"}
AS_B = {"Authorization": f"Bearer {KEY_B}"}


def env(mock: Mock, url: str, **extra: str) -> dict[str, str]:
    return two_providers(mock, DATABASE_URL=url, **{"HISTORY_FLUSH_SECONDS": "0.05", **extra})


async def history(client: TestClient[Any, Any], path: str = "", **kw: Any) -> Any:
    response = await client.get(f"/v1/history{path}", **kw)
    return response.status, await response.json()


# -- rows ----------------------------------------------------------------------------------------
async def test_successes_and_failures_are_written_with_their_figures_and_content(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**env(mock, database, PROVIDER_ORDER="groq", BACKOFF_BASE_SECONDS="0"))
    ok = await client.post("/chat", json=USER, headers={"X-Request-ID": "req-ok"})
    assert ok.status == 200
    stream = await client.post("/stream", json=USER, headers={"X-Request-ID": "req-stream"})
    await stream.read()
    failing = two_providers(mock, groq="status=500")["GROQ_BASE_URL"]
    client_bad = await gateway(**env(mock, database, PROVIDER_ORDER="groq", GROQ_BASE_URL=failing))
    bad = await client_bad.post("/chat", json=USER, headers={"X-Request-ID": "req-bad"})
    assert bad.status == 502
    found = {row["request_id"]: row for row in await wait_rows(database, 3)}
    good = found["req-ok"]
    assert (good["route"], good["status"], good["provider"]) == ("/chat", 200, "groq")
    assert good["model"] == "llama-3.3-70b-versatile"
    assert (good["attempts"], good["prompt_tokens"], good["completion_tokens"]) == (1, 2, 8)
    assert good["client_id"] == "anonymous"
    assert good["latency_ms"] > 0
    assert good["ttfb_ms"] == good["latency_ms"]
    assert good["answer"] == "Hello from the mock provider.\nSecond line"
    assert '"hello there"' in good["messages"]
    assert good["error_type"] is None
    assert good["created_at"] > datetime.now(UTC) - timedelta(minutes=1)
    # The cost the client was told, to the nano-dollar: 2 and 8 tokens at $0.59 and $0.79.
    assert good["cost_nanos"] == 7500
    assert ok.headers["x-modelrouter-cost-usd"] == "0.0000075"
    assert good["usage_estimated"] is False
    streamed = found["req-stream"]
    assert (streamed["route"], streamed["status"]) == ("/stream", 200)
    assert streamed["answer"] == good["answer"]
    assert 0 < streamed["ttfb_ms"] <= streamed["latency_ms"]
    assert streamed["cost_nanos"] == 7500  # the seed's stream shows no cost; its row has it
    failed = found["req-bad"]
    assert (failed["status"], failed["error_type"]) == (502, "upstream_error")
    assert failed["answer"] is None
    assert failed["cost_nanos"] is None  # no provider answered: nothing charged
    status, shown = await history(client, "/req-ok")
    assert (status, shown["cost_usd"], shown["usage_estimated"]) == (200, 7.5e-06, False)
    assert (await (await client.get("/health")).json())["history"] == "ok"
    page = await scrape(client)
    assert page.value("modelrouter_history_rows_total") == 2


async def test_without_store_content_no_message_or_answer_is_kept(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**env(mock, database, HISTORY_STORE_CONTENT="false"))
    await client.post("/chat", json=USER)
    (row,) = await wait_rows(database, 1)
    assert (row["messages"], row["answer"], row["status"]) == (None, None, 200)


async def test_the_api_shows_each_client_key_its_own_records_only(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**env(mock, database, API_KEY=f"{KEY_A},{KEY_B}"))
    await client.post("/chat", json=USER, headers={**AS_A, "X-Request-ID": "mine"})
    await client.post("/v1/chat/completions", json=USER, headers={**AS_B, "X-Request-ID": "theirs"})
    await client.post("/chat", json=USER, headers={"Authorization": "Bearer wrong"})  # a 401
    stored = await wait_rows(database, 2)
    assert {row["client_id"] for row in stored} == {key_id(KEY_A), key_id(KEY_B)}
    assert all(KEY_A not in str(dict(row)) and KEY_B not in str(dict(row)) for row in stored)
    status, body = await history(client, headers=AS_A)
    assert status == 200
    assert [r["request_id"] for r in body["data"]] == ["mine"]
    assert body["data"][0]["answer"] == "Hello from the mock provider.\nSecond line"
    assert body["data"][0]["messages"] == USER["messages"]
    assert "client_id" not in body["data"][0]
    assert (await history(client, "/mine", headers=AS_A))[0] == 200
    status, error = await history(client, "/theirs", headers=AS_A)
    assert status == 404  # exactly as for a request that never was
    assert error["error"]["code"] == "request_not_found"
    assert (await history(client, "/theirs", headers=AS_B))[1]["route"] == "/v1/chat/completions"
    assert (await history(client))[0] == 401


async def test_without_api_key_there_is_one_client_that_sees_every_record(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**env(mock, database))
    await client.post("/chat", json=USER, headers={"X-Request-ID": "one"})
    await client.post("/stream", json=USER, headers={"X-Request-ID": "two"})
    await wait_rows(database, 2)
    status, body = await history(client)
    assert status == 200
    assert sorted(r["request_id"] for r in body["data"]) == ["one", "two"]


async def test_pages_follow_the_cursor_and_filters_narrow_them(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**env(mock, database, BACKOFF_BASE_SECONDS="0"))
    for n in range(5):
        await client.post("/chat", json=USER, headers={"X-Request-ID": f"r{n}"})
    await client.post(
        "/chat", json={**USER, "provider": "openrouter"}, headers={"X-Request-ID": "or"}
    )
    await client.post(
        "/chat", json={**USER, "provider": "nowhere"}, headers={"X-Request-ID": "bad"}
    )
    await wait_rows(database, 7)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, body = await history(client, params=params)
        assert status == 200
        assert len(body["data"]) <= 3
        seen += [r["request_id"] for r in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["bad", "or", "r4", "r3", "r2", "r1", "r0"]  # newest first, each once
    _, body = await history(client, params={"provider": "openrouter"})
    assert [r["request_id"] for r in body["data"]] == ["or"]
    _, body = await history(client, params={"status": "400"})
    assert [r["request_id"] for r in body["data"]] == ["bad"]
    _, body = await history(client, params={"model": "llama-3.3-70b-versatile", "limit": "200"})
    assert len(body["data"]) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await history(client, params={"since": future}))[1]["data"] == []
    _, body = await history(client, params={"until": future, "since": "0"})
    assert len(body["data"]) == 7
    for bad in ({"cursor": "garbage!"}, {"limit": "0"}, {"status": "abc"}, {"since": "noon"}):
        status, error = await history(client, params=bad)
        assert status == 400, bad
        assert error["error"]["param"] == next(iter(bad))


async def test_without_database_url_the_history_api_says_it_is_off(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    status, body = await history(client)
    assert (status, body["error"]["code"]) == (404, "history_off")
    assert (await (await client.get("/health")).json())["history"] == "off"


# -- the database away ---------------------------------------------------------------------------
async def test_requests_are_unaffected_while_the_database_is_away_and_rows_follow_its_return(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    name = database.rsplit("/", 1)[1]
    client = await gateway(**env(mock, database))
    await client.post("/chat", json=USER)
    await wait_rows(database, 1)
    conn = await admin()
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        for n in range(5):
            response = await client.post("/chat", json=USER, headers={"X-Request-ID": f"away{n}"})
            assert response.status == 200
            stream = await client.post("/stream", json=USER)
            assert (await stream.read()).endswith(b"data: [DONE]\n\n")

        async def degraded() -> bool:
            health = await (await client.get("/health")).json()
            return bool(health["history"] == "degraded" and health["status"] == "degraded")

        await wait_until(degraded)
        status, body = await history(client)
        assert (status, body["error"]["code"]) == (503, "history_unavailable")
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await conn.close()
    stored = await wait_rows(database, 11, timeout=20)
    assert {f"away{n}" for n in range(5)} <= {row["request_id"] for row in stored}

    async def recovered() -> bool:
        return bool((await (await client.get("/health")).json())["history"] == "ok")

    await wait_until(recovered)
    page = await scrape(client)
    assert page.total("modelrouter_history_errors_total", op="write") >= 1
    assert page.value("modelrouter_history_dropped_total") == 0


async def test_the_gateway_starts_and_serves_with_the_database_unreachable(
    gateway: Gateway, mock: Mock
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    client = await gateway(**env(mock, url))
    response = await client.post("/chat", json=USER)
    assert response.status == 200

    async def degraded() -> bool:
        return bool((await (await client.get("/health")).json())["history"] == "degraded")

    await wait_until(degraded)
    page = await scrape(client)
    assert page.total("modelrouter_history_errors_total", op="migrate") >= 1


async def test_rows_still_queued_are_written_at_shutdown(mock: Mock, database: str) -> None:
    from aiohttp.test_utils import TestServer

    settings = load_settings(
        env(mock, database, HISTORY_FLUSH_SECONDS="60", PROVIDER_ORDER="groq,openrouter")
    )
    app = create_app(settings)
    async with TestServer(app) as server, TestClient(server) as client:
        await wait_until(lambda: _written_once(client))  # the flush after the migration
        for _ in range(3):
            assert (await client.post("/chat", json=USER)).status == 200
        await asyncio.sleep(0.05)
        assert await count_rows(database) == 0  # waiting for the next flush, a minute away
    assert await count_rows(database) == 3


async def _written_once(client: TestClient[Any, Any]) -> bool:
    """Whether the writer migrated and flushed (then it waits HISTORY_FLUSH_SECONDS): a
    request sent between the migration and that flush would be written at once."""
    return bool((await (await client.get("/health")).json())["history"] == "ok")


# -- migrations, the queue, retention ------------------------------------------------------------
async def test_migrations_are_applied_once_even_when_replicas_start_at_once(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        assert sorted(applied) == [[], [], [], list(range(1, LATEST + 1))]
        assert await migrate(conns[0]) == []
        versions = await conns[0].fetch("SELECT version FROM modelrouter_schema")
        assert [row[0] for row in versions] == list(range(1, LATEST + 1))
    finally:
        for conn in conns:
            await conn.close()


class DownPool:
    """A pool whose database never answers."""

    def acquire(self) -> Any:
        raise OSError("connection refused")


async def test_a_full_queue_drops_its_oldest_rows_and_counts_them() -> None:
    metrics = Metrics()
    settings = HistorySettings(queue_rows=3, batch_rows=2)
    writer = HistoryWriter(DownPool(), settings, metrics)
    for n in range(5):
        writer.add(record(n))
    assert [r.request_id for r in writer.queue] == ["r2", "r3", "r4"]
    assert not await writer._step()
    assert writer.state == "degraded"
    assert [r.request_id for r in writer.queue] == ["r2", "r3", "r4"]
    assert metrics.history_dropped._value.get() == 2


async def test_rows_past_the_retention_are_purged(database: str) -> None:
    pool = await asyncpg.create_pool(database, min_size=0, max_size=2)
    try:
        writer = HistoryWriter(pool, HistorySettings(retention_days=7), Metrics())
        writer.add(record(1, days_old=8))
        writer.add(record(2, days_old=6))
        assert await writer._step()
        await writer._purge()
        assert [row["request_id"] for row in await rows(database)] == ["r2"]
    finally:
        await pool.close()


# -- configuration -------------------------------------------------------------------------------
def test_the_database_password_is_masked_and_redacted_and_bad_values_are_listed() -> None:
    from modelrouter.config import ConfigError, describe, secrets_of

    settings = load_settings({"DATABASE_URL": "postgresql://mr:s3cret-db-pass@db:5432/mr"})
    assert describe(settings)["database_url"] == "postgresql://mr:***@db:5432/mr"
    assert "s3cret-db-pass" in secrets_of(settings)
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "DATABASE_URL": "mysql://db/mr",
                "HISTORY_BATCH_ROWS": "0",
                "HISTORY_STORE_CONTENT": "maybe",
                "CACHE_MAX_BYTES": "2048",
                "CACHE_MAX_VALUE_BYTES": "4096",
            }
        )
    problems = " ".join(caught.value.problems)
    for name in ("DATABASE_URL", "HISTORY_BATCH_ROWS", "HISTORY_STORE_CONTENT", "CACHE_MAX_VALUE"):
        assert name in problems
