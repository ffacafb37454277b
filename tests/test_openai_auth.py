"""A 401 on /v1 in OpenAI's own words, so that clients which read the words, not only the status,
take it for a bad key: litellm maps an OpenAI-compatible error whose body says
`invalid_request_error` to `BadRequestError` unless it also says "Incorrect API key provided"
(`litellm_core_utils/exception_mapping_utils.py`, `_map_openai_exception`); only then does the
401 become its `AuthenticationError`. The seed's routes keep their own error format."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
WRONG_KEY = "sk-wrong-key-that-must-not-come-back-0001"


def litellm_takes_it_for_a_bad_request(error_text: str) -> bool:
    """litellm's rule for an OpenAI-compatible provider's error, checked before the status."""
    return "invalid_request_error" in error_text and "Incorrect API key provided" not in error_text


async def test_a_wrong_key_on_v1_is_openais_401_and_the_sdk_raises_authentication_error(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    api = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await api.chat.completions.create(model="auto", messages=MESSAGES)
    error: Any = caught.value
    assert (error.status_code, error.type, error.code) == (
        401,
        "invalid_request_error",
        "invalid_api_key",
    )
    assert error.body["message"].startswith("Incorrect API key provided")
    assert not litellm_takes_it_for_a_bad_request(str(error))
    assert WRONG_KEY not in str(error.body), "the key sent is never echoed"
    assert await mock.count("") == 0


@pytest.mark.parametrize("header", [None, "Bearer ", "Basic abc"])
async def test_a_missing_key_on_v1_is_the_same_401(
    gateway: Gateway, mock: Mock, header: str | None
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    headers = {} if header is None else {"Authorization": header}
    response = await client.get("/v1/models", headers=headers)
    assert response.status == 401
    error = (await response.json())["error"]
    assert error["message"].startswith("Incorrect API key provided")
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert not litellm_takes_it_for_a_bad_request(await response.text())


async def test_a_wrong_key_on_a_seed_route_keeps_the_seeds_format(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    response = await client.post(
        "/chat", json=USER, headers={"Authorization": f"Bearer {WRONG_KEY}"}
    )
    assert response.status == 401
    error = (await response.json())["error"]
    assert set(error) == {"type", "message", "request_id"}
    assert error["type"] == "unauthorized"
    assert WRONG_KEY not in error["message"]
