"""`/v1/chat/completions` and `/v1/models` over plain HTTP: parameters, capabilities, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import (
    CLIENT_KEY,
    USER,
    Gateway,
    Mock,
    cut_stream_error,
    parse_sse,
    two_providers,
)
from tests.test_anthropic import ANTHROPIC_KEY, anthropic

MOCK_TEXT = "Hello from the mock provider.\nSecond line"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
COMPLETIONS = "/v1/chat/completions"


def ollama(mock: Mock) -> dict[str, str]:
    return {"PROVIDER_ORDER": "ollama", "OLLAMA_BASE_URL": mock.url}


def env_for(kind: str, mock: Mock) -> dict[str, str]:
    if kind == "ollama":
        return ollama(mock)
    if kind == "anthropic":
        return anthropic(mock)
    return {**two_providers(mock), "PROVIDER_ORDER": "groq"}


UNSUPPORTED: list[tuple[str, dict[str, Any], str]] = [
    # Not relayed by any provider:
    ("groq", {"n": 2}, "n"),
    ("groq", {"logit_bias": {"1": 5}}, "logit_bias"),
    ("groq", {"logprobs": True}, "logprobs"),
    ("groq", {"top_logprobs": 3}, "top_logprobs"),
    ("groq", {"functions": [{"name": "f"}]}, "functions"),
    ("groq", {"modalities": ["audio"]}, "modalities"),
    ("groq", {"no_such_thing": 1}, "no_such_thing"),
    ("groq", {"stream_options": {"include_obfuscation": True}, "stream": True}, "stream_options"),
    # Not honoured by Ollama's adapter:
    ("ollama", {"tools": [TOOL]}, "tools"),
    ("ollama", {"tool_choice": "auto"}, "tool_choice"),
    ("ollama", {"parallel_tool_calls": False}, "parallel_tool_calls"),
    ("ollama", {"user": "u-1"}, "user"),
    ("ollama", {"n": 3}, "n"),
    # Not honoured by Anthropic's adapter:
    ("anthropic", {"response_format": {"type": "json_object"}}, "response_format"),
    ("anthropic", {"seed": 7}, "seed"),
    ("anthropic", {"presence_penalty": 0.5}, "presence_penalty"),
    ("anthropic", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("anthropic", {"n": 2}, "n"),
]


@pytest.mark.parametrize(("kind", "extra", "param"), UNSUPPORTED)
async def test_unsupported_parameter_is_a_400_naming_it(
    gateway: Gateway, mock: Mock, kind: str, extra: dict[str, Any], param: str
) -> None:
    client = await gateway(**env_for(kind, mock))
    response = await client.post(COMPLETIONS, json={**USER, **extra})
    assert response.status == 400
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert f"`{param}`" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_parameter"
    assert response.headers["X-Request-ID"]
    assert await mock.count("") == 0


@pytest.mark.parametrize("path", ["/chat", "/stream"])
@pytest.mark.parametrize(
    ("kind", "extra", "param"),
    [
        ("anthropic", {"seed": 7}, "seed"),
        ("anthropic", {"response_format": {"type": "json_object"}}, "response_format"),
        ("ollama", {"user": "u-1"}, "user"),
        ("groq", {"n": 2}, "n"),
    ],
)
async def test_seed_routes_refuse_what_the_provider_cannot_honour(
    gateway: Gateway, mock: Mock, path: str, kind: str, extra: dict[str, Any], param: str
) -> None:
    client = await gateway(**env_for(kind, mock))
    response = await client.post(path, json={**USER, **extra})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "unsupported_parameter"
    assert f"`{param}`" in error["message"]
    assert await mock.count("") == 0


@pytest.mark.parametrize("path", ["/chat", "/stream"])
@pytest.mark.parametrize("field", ["tools", "tool_choice", "parallel_tool_calls"])
async def test_seed_routes_refuse_tools_their_answer_cannot_carry(
    gateway: Gateway, mock: Mock, path: str, field: str
) -> None:
    client = await gateway(**two_providers(mock))
    value = {"tools": [TOOL], "tool_choice": "auto", "parallel_tool_calls": True}[field]
    response = await client.post(path, json={**USER, field: value})
    assert response.status == 400
    assert "/v1/chat/completions" in (await response.json())["error"]["message"]


async def test_auto_leaves_out_providers_that_cannot_honour_a_parameter(
    gateway: Gateway, mock: Mock
) -> None:
    env = {**two_providers(mock), **anthropic(mock), "PROVIDER_ORDER": "anthropic,groq"}
    client = await gateway(**env)
    body = {**USER, "response_format": {"type": "json_object"}, "seed": 3}
    response = await client.post(COMPLETIONS, json=body)
    assert response.status == 200
    assert (await response.json())["provider"] == "groq"
    sent = (await mock.received())[-1]
    assert sent["body"]["response_format"] == {"type": "json_object"}
    assert len(await mock.received()) == 1, "anthropic was never asked"


async def test_a_named_provider_that_cannot_honour_a_parameter_is_a_400(
    gateway: Gateway, mock: Mock
) -> None:
    env = {**two_providers(mock), **anthropic(mock), "PROVIDER_ORDER": "groq,anthropic"}
    client = await gateway(**env)
    body = {**USER, "model": "anthropic/claude-x", "seed": 3}
    response = await client.post(COMPLETIONS, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "seed"
    assert "'anthropic'" in error["message"]


async def test_no_provider_able_to_honour_a_parameter_is_a_400_listing_them(
    gateway: Gateway, mock: Mock
) -> None:
    env = {**anthropic(mock), "OLLAMA_BASE_URL": mock.url, "PROVIDER_ORDER": "anthropic,ollama"}
    client = await gateway(**env)
    response = await client.post(COMPLETIONS, json={**USER, "seed": 1, "tools": [TOOL]})
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "anthropic: seed" in message
    assert "ollama: tools" in message


async def test_supported_parameters_reach_an_openai_compatible_upstream(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    schema = {"name": "answer", "schema": {"type": "object"}}
    body = {
        **USER,
        "model": "groq/llama-3.1-8b-instant",
        "stop": ["END"],
        "seed": 42,
        "user": "user-7",
        "response_format": {"type": "json_schema", "json_schema": schema},
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "max_completion_tokens": 99,
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "n": 1,
        "logprobs": False,
        "store": False,
        "top_logprobs": None,  # null is absent, as for OpenAI
    }
    response = await client.post(COMPLETIONS, json={**USER, "tools": []})
    assert response.status == 200, "an empty tool list is no tool list"
    assert "tools" not in (await mock.received())[-1]["body"]
    response = await client.post(COMPLETIONS, json=body)
    assert response.status == 200
    sent = (await mock.received())[-1]["body"]
    for key in ("stop", "seed", "user", "response_format", "presence_penalty", "tools"):
        assert sent[key] == body[key], key
    assert sent["model"] == "llama-3.1-8b-instant"
    assert sent["max_tokens"] == 99
    assert sent["tool_choice"] == body["tool_choice"]
    assert sent["parallel_tool_calls"] is False
    for key in ("logprobs", "store", "top_logprobs", "max_completion_tokens"):
        assert key not in sent


async def test_ollama_gets_json_mode_and_seed_in_its_own_names(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**ollama(mock))
    body = {**USER, "response_format": {"type": "json_object"}, "seed": 5, "stop": "END"}
    response = await client.post(COMPLETIONS, json=body)
    assert response.status == 200
    sent = (await mock.received())[-1]["body"]
    assert sent["format"] == "json"
    assert sent["options"] == {"seed": 5, "stop": ["END"]}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema},
    }
    await client.post(COMPLETIONS, json=body)
    assert (await mock.received())[-1]["body"]["format"] == schema


async def test_developer_role_and_text_parts_become_plain_messages(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "you"}],
        },
        {"role": "assistant", "content": None, "refusal": None, "annotations": []},
    ]
    response = await client.post(COMPLETIONS, json={"model": "auto", "messages": messages})
    assert response.status == 200
    assert (await mock.received())[-1]["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello you"},
        {"role": "assistant", "content": ""},
    ]


BAD_REQUESTS: list[tuple[Any, str | None, str]] = [
    (b"{not json", None, "not valid JSON"),
    (b"[1]", None, "JSON object"),
    ({"model": "auto"}, None, "messages"),
    ({**USER, "temperature": 3}, "temperature", "temperature"),
    ({**USER, "stream": "yes"}, "stream", "stream"),
    ({**USER, "stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
    ({**USER, "max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "differ"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "role"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content",
        "image_url",
    ),
]


@pytest.mark.parametrize(("body", "param", "needle"), BAD_REQUESTS)
async def test_bad_requests_are_openai_shaped_400s(
    gateway: Gateway, mock: Mock, body: Any, param: str | None, needle: str
) -> None:
    client = await gateway(**two_providers(mock))
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = await client.post(COMPLETIONS, headers={"X-Request-ID": "bad-1"}, **kwargs)
    assert response.status == 400
    assert response.headers["X-Request-ID"] == "bad-1"
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert needle in error["message"]
    assert await mock.count("") == 0


async def test_oversized_body_is_an_openai_shaped_413(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, MAX_BODY_BYTES="2048"))
    big = {"messages": [{"role": "user", "content": "x" * 4096}]}
    response = await client.post(COMPLETIONS, json=big)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_missing_key_is_an_openai_shaped_401(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    for method, path in (("POST", COMPLETIONS), ("GET", "/v1/models"), ("GET", "/v1/models/auto")):
        response = await client.request(method, path, json=USER)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"
        assert "Bearer" in response.headers["WWW-Authenticate"]


async def test_completions_fall_over_and_name_the_provider(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="status=503"))
    response = await client.post(COMPLETIONS, json=USER)
    assert response.status == 200
    assert response.headers["x-modelrouter-provider"] == "openrouter"
    body = await response.json()
    assert body["provider"] == "openrouter"
    assert body["model"] == "openrouter/meta-llama/llama-3.3-70b-instruct"
    assert body["choices"][0]["message"]["content"] == MOCK_TEXT
    assert body["id"] == f"chatcmpl-{response.headers['X-Request-ID']}"


async def test_completion_stream_is_sse_with_provider_in_each_chunk(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="reset_after=0"))
    response = await client.post(COMPLETIONS, json={**USER, "stream": True})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["x-modelrouter-provider"] == "openrouter"
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["provider"] for c in chunks} == {"openrouter"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == MOCK_TEXT


async def test_cut_completion_stream_ends_with_an_error_and_no_done(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="reset_after=3"))
    response = await client.post(COMPLETIONS, json={**USER, "stream": True})
    error = cut_stream_error(parse_sse(await response.text()))
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_error"
    assert error["request_id"] == response.headers["X-Request-ID"]


async def test_completions_share_the_stream_cap_with_stream(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="stall_after=1", MAX_CONCURRENT_STREAMS="1"))
    held = await client.post("/stream", json=USER)
    await held.content.readline()
    response = await client.post(COMPLETIONS, json={**USER, "stream": True})
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "too_many_streams"
    plain = await client.post(COMPLETIONS, json={**USER, "model": "openrouter/m"})
    assert plain.status == 200, "a whole answer is not a stream"
    held.close()


async def test_completions_are_counted_under_their_route(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    await client.post(COMPLETIONS, json=USER)
    await client.post(COMPLETIONS, json={**USER, "n": 2})
    await client.get("/v1/models")
    text = await (await client.get("/metrics")).text()
    route = 'route="/v1/chat/completions"'
    assert f'modelrouter_requests_total{{method="POST",{route},status="200"}} 1.0' in text
    assert f'modelrouter_requests_total{{method="POST",{route},status="400"}} 1.0' in text
    assert f"modelrouter_request_latency_seconds_count{{{route}}} 2.0" in text
    assert 'route="/v1/models",status="200"' in text


async def test_models_list_auto_providers_and_aliases(gateway: Gateway, mock: Mock) -> None:
    env = {**two_providers(mock), "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    env |= {"PROVIDER_ORDER": "groq,anthropic", "MODEL_ALIASES": "smart=anthropic|groq"}
    client = await gateway(**env)
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in body["data"]] == [
        ("auto", "modelrouter"),
        ("groq/llama-3.3-70b-versatile", "groq"),
        ("anthropic/claude-haiku-4-5", "anthropic"),
        ("smart", "modelrouter"),
    ]
    one = await (await client.get("/v1/models/groq/any-model")).json()
    assert one == {"id": "groq/any-model", "object": "model", "created": 0, "owned_by": "groq"}
    missing = await client.get("/v1/models/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"
