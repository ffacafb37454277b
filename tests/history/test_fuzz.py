"""The history routes' document, and a bounded schemathesis run over them against a gateway
whose history holds records (the suite's whole-API fuzz runs without a database, where these
routes only answer 404): no generated filter, cursor or request id gives a 5xx, and each
answer, the records included, matches `GET /openapi.json`."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis

from modelrouter.web.openapi import openapi_document
from tests.faults.support import AUTH, USER, GatewayProcess, MockProcess, fault_env
from tests.history.conftest import count_rows, create_database, drop_database
from tests.test_fuzz_api import CHECKS, FUZZ_SETTINGS, call_and_validate

SCHEMA = schemathesis.openapi.from_dict(openapi_document(auth=True)).include(
    path_regex="^/v1/history"
)
HISTORY_PATHS = ("/v1/history", "/v1/history/{request_id}")


def test_the_document_gives_the_history_routes_their_records_filters_and_503() -> None:
    document = openapi_document(auth=True)
    ref = "#/components/schemas/{}"
    for path, schema in zip(HISTORY_PATHS, ("HistoryPage", "HistoryRecord"), strict=True):
        responses = document["paths"][path]["get"]["responses"]
        assert {"200", "400", "401", "404", "503"} <= set(responses)
        assert responses["200"]["content"]["application/json"]["schema"] == {
            "$ref": ref.format(schema)
        }
    record = document["components"]["schemas"]["HistoryRecord"]
    assert "client_id" not in record["properties"]
    assert {"request_id", "created_at", "status", "messages", "answer"} <= set(record["required"])
    names = {p["name"] for p in document["paths"]["/v1/history"]["get"]["parameters"]}
    assert {"since", "until", "provider", "model", "status", "limit", "cursor"} <= names


def _post(url: str, path: str, request_id: str) -> None:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(USER).encode(),
        headers={**AUTH, "Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    """A gateway whose history holds a few records of its client key's."""
    database = asyncio.run(create_database())
    mock = MockProcess().started()
    env = fault_env(mock, DATABASE_URL=database, HISTORY_FLUSH_SECONDS="0.05", LOG_LEVEL="WARNING")
    process = GatewayProcess(env).started()
    try:
        for n, path in enumerate(("/chat", "/v1/chat/completions", "/chat")):
            _post(process.url, path, f"fuzz-{n}")
        deadline = time.monotonic() + 10
        while asyncio.run(count_rows(database)) < 3:
            assert time.monotonic() < deadline, "the history was not written"
            time.sleep(0.05)
        yield process
    finally:
        process.stop()
        mock.stop()
        asyncio.run(drop_database(database))


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_no_history_query_gives_a_5xx_or_an_answer_outside_the_document(
    case: schemathesis.Case, gateway: GatewayProcess
) -> None:
    call_and_validate(case, gateway)


def test_a_page_of_records_matches_the_document(gateway: GatewayProcess) -> None:
    case = SCHEMA["/v1/history"]["GET"].Case(query={"limit": 2})
    response = case.call(base_url=gateway.url, headers=AUTH, timeout=10)
    case.validate_response(response, checks=CHECKS)
    page = response.json()
    assert [r["request_id"] for r in page["data"]] == ["fuzz-2", "fuzz-1"]
    assert page["data"][0]["messages"] == USER["messages"]
    assert page["next_cursor"] is not None


def test_the_gateway_logged_no_error_while_fuzzed(gateway: GatewayProcess) -> None:
    errors = [line for line in gateway.log_lines() if line.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
