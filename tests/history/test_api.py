"""`GET /v1/history` reads: a filter, cursor or request id that cannot be queried is the
client's 400 (in OpenAI's error shape, with the request id), checked before the database is
asked, so it is never a retryable 503; and what a caller without API_KEY sees."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until
from tests.history.conftest import wait_rows

KEY = "client-key-hist-0001"
AS_KEY = {"Authorization": f"Bearer {KEY}"}


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# (query parameters, the parameter the 400 names)
MALFORMED: list[tuple[dict[str, str], str]] = [
    ({"provider": "\x00"}, "provider"),
    ({"model": "m\x00"}, "model"),
    ({"provider": "p" * 1000}, "provider"),
    ({"cursor": cursor(f"2026-01-01T00:00:00+00:00|{2**63}")}, "cursor"),
    ({"cursor": cursor("2026-01-01T00:00:00+00:00|-1")}, "cursor"),
    ({"cursor": cursor("2026-01-01T00:00:00|5")}, "cursor"),  # no zone
    ({"cursor": cursor("0001-01-01T00:00:00+14:00|5")}, "cursor"),  # before year 1 in UTC
    ({"cursor": "\x00"}, "cursor"),
    ({"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ({"until": "9999-12-31T23:59:59-14:00"}, "until"),
    ({"status": "²"}, "status"),
    ({"limit": "1²"}, "limit"),
    ({"since": "1e400"}, "since"),
]


async def expect_400(client: TestClient[Any, Any], path: str, params: dict[str, str]) -> Any:
    response = await client.get(path, params=params, headers={"X-Request-ID": "bad-filter"})
    assert response.status == 400, (params, await response.text())
    assert response.headers["X-Request-ID"] == "bad-filter"
    assert response.headers["x-should-retry"] == "false"
    body = await response.json()
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


async def test_malformed_filters_and_cursors_are_400s_naming_the_parameter(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**two_providers(mock, DATABASE_URL=database))
    for params, name in MALFORMED:
        error = await expect_400(client, "/v1/history", params)
        assert error["param"] == name, params


async def test_malformed_filters_are_400s_even_with_the_database_away(
    gateway: Gateway, mock: Mock
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    client = await gateway(**two_providers(mock, DATABASE_URL=url))
    for params, name in MALFORMED:
        error = await expect_400(client, "/v1/history", params)
        assert error["param"] == name, params
    response = await client.get("/v1/history")
    assert response.status == 503  # a sane query, and the database does not answer


async def test_a_request_id_that_no_request_can_have_is_a_400(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await gateway(**two_providers(mock, DATABASE_URL=database))
    error = await expect_400(client, "/v1/history/a%00b", {})
    assert error["param"] == "request_id"

    async def migrated() -> bool:
        return bool((await (await client.get("/health")).json())["history"] == "ok")

    await wait_until(migrated)
    response = await client.get("/v1/history/no-such-request")
    assert response.status == 404


async def test_without_api_key_the_anonymous_caller_sees_only_requests_made_without_a_key(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    keyed = await gateway(**two_providers(mock, DATABASE_URL=database, API_KEY=KEY))
    await keyed.post("/chat", json=USER, headers={**AS_KEY, "X-Request-ID": "with-key"})
    anonymous = await gateway(**two_providers(mock, DATABASE_URL=database))
    await anonymous.post("/chat", json=USER, headers={"X-Request-ID": "without-key"})
    await wait_rows(database, 2)
    body = await (await anonymous.get("/v1/history")).json()
    assert [r["request_id"] for r in body["data"]] == ["without-key"]
    assert (await anonymous.get("/v1/history/with-key")).status == 404
