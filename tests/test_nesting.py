"""Deep nesting in the free-form parts of a request is a 400 that names the parameter.

`response_format.json_schema` and `tools[].function.parameters` nested 1,000 deep (6 KB) once
exhausted Python's recursion and answered 500; a body too deep to decode at all did too."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrouter.web.nesting import MAX_DEPTH, SCAN_TOKENS, deep_parameter
from tests.conftest import USER, Gateway, Mock, two_providers


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def body_with(field: str, depth: int) -> str:
    if field == "tools":
        value = f'[{{"type":"function","function":{{"name":"f","parameters":{nested(depth)}}}}}]'
    else:
        value = f'{{"type":"json_schema","json_schema":{nested(depth)}}}'
    return json.dumps(USER | {"model": "auto"})[:-1] + f', "{field}": {value}}}'


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1000, 5000])
@pytest.mark.parametrize(
    ("route", "field", "param"),
    [
        ("/v1/chat/completions", "response_format", "response_format.json_schema"),
        ("/v1/chat/completions", "tools", "tools[0].function.parameters"),
        ("/chat", "response_format", "response_format.json_schema"),
        ("/stream", "response_format", "response_format.json_schema"),
    ],
)
async def test_nesting_past_the_bound_is_a_400_naming_the_parameter(
    gateway: Gateway, mock: Mock, route: str, field: str, param: str, depth: int
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post(
        route, data=body_with(field, depth), headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    error: dict[str, Any] = (await response.json())["error"]
    assert param in error["message"]
    if route.startswith("/v1"):
        assert error["param"] == param


async def test_a_schema_within_the_bound_is_relayed(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post(
        "/v1/chat/completions",
        data=body_with("response_format", MAX_DEPTH - 2),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[" * 2000 + b"]" * 2000, "body"),
        (b'{"stop":' + b"[" * 2000 + b"]" * 2000 + b"}", "stop"),
        (
            b'{"model":"a","tools":[{},{"function":{"parameters":' + nested(999).encode() + b"}}]}",
            "tools[1].function.parameters",
        ),
        (
            b'{"response_format":{"json_schema":{"x":"[{","y":' + nested(999).encode() + b"}}}",
            "response_format.json_schema",
        ),
        (b'{"messages":' + b"[]," * (SCAN_TOKENS // 2) + b"[]}", "messages"),
    ],
)
def test_a_body_too_deep_to_decode_is_named_from_its_tokens(body: bytes, param: str) -> None:
    error = deep_parameter(body)
    assert error.status == 400
    assert error.param == param
