"""The official `openai` Python package, unchanged, against a live gateway on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import CLIENT_KEY, Gateway, Mock, two_providers

MOCK_TEXT = "Hello from the mock provider.\nSecond line"
MESSAGES: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def sdk(client: TestClient[Any, Any], key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0)


async def test_sdk_gets_a_plain_completion_with_usage(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "groq/llama-3.3-70b-versatile"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8
    assert (completion.model_extra or {})["provider"] == "groq"


async def test_sdk_raw_response_carries_provider_and_request_id(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=500", API_KEY=CLIENT_KEY))
    raw = await sdk(client).chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers={"X-Request-ID": "sdk-req-1"}
    )
    assert raw.headers["x-modelrouter-provider"] == "openrouter"
    assert raw.request_id == "sdk-req-1"
    assert raw.parse().choices[0].message.content == MOCK_TEXT


async def test_sdk_streams_chunks_then_finish_reason(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    stream = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(chunk.usage is None for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1


async def test_sdk_stream_ends_with_a_usage_chunk_when_asked(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + 8
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_sdk_gets_a_tool_call(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="tool_call=1", API_KEY=CLIENT_KEY))
    completion = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id == "call_mock_1"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = (await mock.received())[-1]["body"]
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == "auto"


async def test_sdk_streams_a_tool_call_as_deltas(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="tool_call=1", API_KEY=CLIENT_KEY))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_mock_1"
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    assert {d.index for d in deltas} == {0}
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def tool_round_trip(client: TestClient[Any, Any], mock: Mock) -> list[Any]:
    """Get a tool call, send its result back as the SDK's users do; what the upstream got."""
    api = sdk(client)
    first = await api.chat.completions.create(model="auto", messages=MESSAGES, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert message.tool_calls is not None
    history: list[Any] = [
        *MESSAGES,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"},
    ]
    await api.chat.completions.create(model="auto", messages=history, tools=[WEATHER_TOOL])
    sent: list[Any] = (await mock.received())[-1]["body"]["messages"]
    return sent


async def test_sdk_sends_the_tool_result_back(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="tool_call=1", API_KEY=CLIENT_KEY))
    sent = await tool_round_trip(client, mock)
    assert sent[2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_mock_1"}


async def test_sdk_lists_the_models(gateway: Gateway, mock: Mock) -> None:
    env = two_providers(mock, API_KEY=CLIENT_KEY, MODEL_ALIASES="fast=groq/llama-3.1-8b-instant")
    client = await gateway(**env)
    models = [model async for model in sdk(client).models.list()]
    assert [m.id for m in models] == [
        "auto",
        "groq/llama-3.3-70b-versatile",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        "fast",
    ]
    assert all(m.object == "model" for m in models)
    assert models[1].owned_by == "groq"
    fast = await sdk(client).models.retrieve("fast")
    assert fast.id == "fast"


async def test_sdk_raises_authentication_error_for_a_bad_key(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(client, key="wrong-key").chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id
    with pytest.raises(openai.AuthenticationError):
        await sdk(client, key="wrong-key").models.list()
    assert await mock.count("") == 0


async def test_sdk_raises_rate_limit_error_when_every_provider_is_out_of_budget(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, API_KEY=CLIENT_KEY, GROQ_RATE_LIMIT="1")
    client = await gateway(**env, PROVIDER_ORDER="groq")
    api = sdk(client)
    await api.chat.completions.create(model="auto", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        await api.chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["Retry-After"]


async def test_sdk_raises_rate_limit_error_when_the_stream_cap_is_reached(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="stall_after=1", API_KEY=CLIENT_KEY)
    client = await gateway(**env, MAX_CONCURRENT_STREAMS="1")
    api = sdk(client)
    held = await api.chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    await held.__anext__()  # the first stream holds the only slot
    with pytest.raises(openai.RateLimitError):
        await api.chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    await held.close()


async def test_sdk_raises_bad_request_for_an_unsupported_parameter(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(client).chat.completions.create(
            model="auto", messages=MESSAGES, logit_bias={"50256": -100}
        )
    assert caught.value.param == "logit_bias"
    assert caught.value.code == "unsupported_parameter"


async def test_sdk_raises_api_error_when_a_stream_is_cut(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="stream_error_after=3", API_KEY=CLIENT_KEY))
    stream = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    received: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - until it raises

    with pytest.raises(openai.APIError) as caught:
        await read()
    assert "".join(received) == "Hello from the"
    assert "groq failed mid-stream" in caught.value.message


async def test_sdk_raises_internal_server_error_when_every_provider_fails(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=500", openrouter="status=503", API_KEY=CLIENT_KEY)
    client = await gateway(**env)
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


# --- Ollama's tool calls, as the SDK sees them ---------------------------------------------------


def ollama_env(mock: Mock, spec: str = "") -> dict[str, str]:
    base = f"{mock.url}/x/{spec}" if spec else mock.url
    return {"PROVIDER_ORDER": "ollama", "OLLAMA_BASE_URL": base, "API_KEY": CLIENT_KEY}


async def test_sdk_gets_a_tool_call_from_ollama(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**ollama_env(mock, "tool_call=1"))
    completion = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"  # Ollama said "stop"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")  # Ollama sends none: the gateway makes one
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = (await mock.received())[-1]
    assert sent["path"] == "/x/tool_call=1/api/chat"
    assert sent["body"]["tools"] == [WEATHER_TOOL]


async def test_sdk_streams_a_tool_call_from_ollama(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**ollama_env(mock, "tool_call=1"))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", None)
    assert first.tool_calls is not None
    assert first.tool_calls[0].id is not None
    assert first.tool_calls[0].id.startswith("call_")
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_sdk_sends_an_ollama_tool_result_back_in_ollama_s_shape(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**ollama_env(mock, "tool_call=1"))
    sent = await tool_round_trip(client, mock)
    assert sent[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    assert sent[3] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


async def test_sdk_chunks_and_completions_carry_a_null_system_fingerprint(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert "system_fingerprint" in completion.model_fields_set
    assert completion.system_fingerprint is None
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all("system_fingerprint" in chunk.model_fields_set for chunk in chunks)
    assert {chunk.system_fingerprint for chunk in chunks} == {None}
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")  # a text answer's first chunk
