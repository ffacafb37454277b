"""OpenAI's error contract on /v1, checked with the official SDK: each status raises the SDK's
exception class with OpenAI's type, code and param, and every error says whether a retry can
help, so the SDK's default retries never multiply upstream calls that cannot succeed."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers
from tests.scrape import scrape

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


def sdk(client: TestClient[Any, Any], *, retries: int = 0, key: str = CLIENT_KEY) -> Any:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key=key, max_retries=retries
    )


async def _create(api: Any, **extra: Any) -> Any:
    return await api.chat.completions.create(model="auto", messages=MESSAGES, **extra)


async def test_every_status_raises_the_sdks_class_with_openais_fields(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(
        mock, groq="status=500", openrouter="status=503", API_KEY=CLIENT_KEY, GROQ_RATE_LIMIT="0"
    )
    client = await gateway(**env)
    api = sdk(client)
    cases: list[tuple[Any, type[Exception], int, str, str | None, str | None]] = [
        # (call, SDK class, status, OpenAI type, code, param)
        (
            _create(api, logit_bias={"1": 1}),
            openai.BadRequestError,
            400,
            "invalid_request_error",
            "unsupported_parameter",
            "logit_bias",
        ),
        (
            _create(sdk(client, key="wrong")),
            openai.AuthenticationError,
            401,
            "invalid_request_error",
            "invalid_api_key",
            None,
        ),
        (
            api.chat.completions.create(model="nosuch/x", messages=MESSAGES),
            openai.NotFoundError,
            404,
            "invalid_request_error",
            "model_not_found",
            "model",
        ),
        (
            api.post("/responses", cast_to=object, body={}),
            openai.NotFoundError,
            404,
            "invalid_request_error",
            "unknown_url",
            None,
        ),
        (
            api.get("/chat/completions", cast_to=object),
            openai.APIStatusError,
            405,
            "invalid_request_error",
            "method_not_allowed",
            None,
        ),
        (_create(api), openai.InternalServerError, 502, "server_error", "upstream_error", None),
    ]
    for call, kind, status, type_, code, param in cases:
        with pytest.raises(kind) as caught:
            await call
        error: Any = caught.value
        assert error.status_code == status, (status, error.body)
        assert (error.type, error.code, error.param) == (type_, code, param), error.body
        assert error.request_id, "X-Request-ID is what the SDK reports as request_id"
    mock_calls = await mock.count("status=500") + await mock.count("status=503")
    assert mock_calls == 2, "only the 502 case reached the providers, once each"


async def test_a_405_says_which_methods_are_allowed(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.get("/v1/chat/completions")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_an_unknown_v1_path_is_openai_shaped_and_a_seed_path_is_seed_shaped(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/v1/completions", json={})
    error = (await response.json())["error"]
    assert (response.status, error["code"]) == (404, "unknown_url")
    assert error["message"] == "Invalid URL (POST /v1/completions)"
    response = await client.post("/nowhere", json={})
    seed = (await response.json())["error"]
    assert (response.status, seed["type"]) == (404, "not_found")
    assert seed["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("nosuch/x", "'nosuch' is not a known provider"),
        ("gpt-9", "no enabled provider is configured with it"),
        ("anthropic/claude-x", "provider 'anthropic' is not enabled"),
    ],
)
async def test_an_unknown_model_is_a_404_that_says_why(
    gateway: Gateway, mock: Mock, model: str, why: str
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/v1/chat/completions", json={**USER, "model": model})
    error = (await response.json())["error"]
    assert (response.status, error["code"], error["param"]) == (404, "model_not_found", "model")
    assert why in error["message"]
    assert "needs a provider" not in error["message"]
    seed = await client.post("/chat", json={**USER, "model": model})
    assert seed.status == 404
    assert (await seed.json())["error"]["type"] == "model_not_found"


@pytest.mark.parametrize(
    "path", ["groq%2F..%2Fx", "groq%2F..%2F..%2Fx", "groq%2F.%2Fx", "groq%2Fa%2F%2Fb", "groq%2F"]
)
async def test_a_model_path_that_is_no_model_name_is_not_found(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.get(f"/v1/models/{path}")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "model_not_found"
    assert (await client.get("/v1/models/groq%2Fmeta-llama%2Fllama-3.1:8b")).status == 200


# -- retry guidance: what the SDK's default retries do ---------------------------------------------


async def _gateway_requests(client: TestClient[Any, Any]) -> float:
    page = await scrape(client)
    return page.total("modelrouter_requests_total", route="/v1/chat/completions")


async def test_sdk_does_not_retry_when_every_provider_was_tried_and_failed(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=500", openrouter="status=503", API_KEY=CLIENT_KEY)
    client = await gateway(**env, BACKOFF_BASE_SECONDS="0")
    with pytest.raises(openai.InternalServerError) as caught:
        await _create(sdk(client, retries=2))  # the SDK's default
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert await _gateway_requests(client) == 1
    assert await mock.count("status=500") + await mock.count("status=503") == 2


async def test_sdk_retries_a_rate_limit_after_the_time_the_gateway_gives(
    gateway: Gateway, mock: Mock
) -> None:
    # 60 a minute: one request a second once the burst of 60 is spent.
    env = two_providers(mock, API_KEY=CLIENT_KEY, GROQ_RATE_LIMIT="60")
    client = await gateway(**env, PROVIDER_ORDER="groq")
    response = None
    for _ in range(80):  # spend the burst
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        if response.status == 429:
            break
    assert response is not None
    assert response.status == 429
    assert response.headers["x-should-retry"] == "true"
    assert 1 <= int(response.headers["retry-after-ms"]) <= 1000
    before = await _gateway_requests(client)
    completion = await _create(sdk(client, retries=2))  # waits retry-after-ms, then succeeds
    assert completion.choices[0].message.content
    assert 2 <= await _gateway_requests(client) - before <= 3


async def test_overload_is_retryable_and_says_when(gateway: Gateway, mock: Mock) -> None:
    from modelrouter.web.runtime import RUNTIME

    client = await gateway(**two_providers(mock))
    client.app[RUNTIME].system.router.limit = 0
    response = await client.post("/v1/chat/completions", json={**USER, "model": "auto"})
    assert response.status == 503
    assert response.headers["x-should-retry"] == "true"
    assert (response.headers["Retry-After"], response.headers["retry-after-ms"]) == ("1", "1000")
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "overloaded")
