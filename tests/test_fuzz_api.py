"""A bounded schemathesis run over the whole HTTP API, from its own `GET /openapi.json`.

A real gateway (with the mock provider behind it) gets generated requests, valid and not: no
answer may be a 5xx, and every answer must match the document (status, content type, body,
headers). The number of examples is bounded so that the run takes seconds."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelrouter.web.openapi import openapi_document
from tests.faults.support import CLIENT_KEY, GatewayProcess, MockProcess, fault_env

SCHEMA = schemathesis.openapi.from_dict(openapi_document(auth=True))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Bounded (the run takes seconds) and the same examples every run.
FUZZ_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def call_and_validate(case: schemathesis.Case, gateway: GatewayProcess) -> None:
    """Send a generated request as the client key: no 5xx, and an answer the document allows."""
    case.call_and_validate(
        base_url=gateway.url,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        checks=CHECKS,
        timeout=15,
    )


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    mock = MockProcess().started()
    env = fault_env(mock, MAX_CONCURRENT_STREAMS="1000", LOG_LEVEL="WARNING")
    process = GatewayProcess(env).started()
    yield process
    process.stop()
    mock.stop()


def test_the_served_document_is_the_generated_one(gateway: GatewayProcess) -> None:
    with urllib.request.urlopen(f"{gateway.url}/openapi.json", timeout=5) as response:
        assert json.loads(response.read()) == openapi_document(auth=True)


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_no_input_gives_a_5xx_or_an_answer_outside_the_document(
    case: schemathesis.Case, gateway: GatewayProcess
) -> None:
    call_and_validate(case, gateway)


def test_the_gateway_logged_no_error_while_fuzzed(gateway: GatewayProcess) -> None:
    errors = [line for line in gateway.log_lines() if line.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
