"""Anthropic Messages API traffic (the mock's Anthropic flavour) through every route."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import USER, Gateway, Mock, cut_stream_error, parse_sse, two_providers
from tests.test_openai_sdk import MESSAGES, WEATHER_TOOL, sdk

MOCK_TEXT = "Hello from the mock provider.\nSecond line"
ANTHROPIC_KEY = "sk-ant-test-secret-anthropic-key"


def anthropic(mock: Mock, spec: str = "", **extra: str) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "anthropic",
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": mock.base(spec, flavour="anthropic"),
        "ANTHROPIC_RATE_LIMIT": "0",
        **extra,
    }


def completion_text(events: list[tuple[str, str]]) -> str:
    chunks = [json.loads(data) for kind, data in events if kind == "message" and data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_chat_answers_from_anthropic(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    body_in = {"messages": [{"role": "system", "content": "be brief"}, *USER["messages"]]}
    response = await client.post("/chat", json=body_in)
    assert response.status == 200
    body = await response.json()
    assert body["text"] == MOCK_TEXT
    assert body["provider"] == "anthropic"
    assert body["model"] == "claude-haiku-4-5"
    assert body["provider_meta"]["tokens_completion"] == 8
    assert response.headers["x-modelrouter-provider"] == "anthropic"
    sent = (await mock.received())[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent["headers"]
    assert sent["body"]["system"] == "be brief"
    assert sent["body"]["messages"] == USER["messages"]
    assert sent["body"]["max_tokens"] == 4096  # required upstream: the documented default


async def test_stream_relays_anthropic_text_deltas(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    response = await client.post("/stream", json={**USER, "max_tokens": 50, "stop": "END"})
    assert response.status == 200
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    assert "".join(data for _, data in events[:-1]) == MOCK_TEXT
    sent = (await mock.received())[-1]["body"]
    assert sent["stream"] is True
    assert sent["max_tokens"] == 50
    assert sent["stop_sequences"] == ["END"]


async def test_completions_answer_from_anthropic_with_usage(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    completion = await sdk(client).chat.completions.create(
        model="anthropic/claude-sonnet-4-5", messages=MESSAGES, user="user-42"
    )
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].finish_reason == "stop"  # Anthropic's end_turn
    assert completion.model == "anthropic/claude-sonnet-4-5"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens > 0
    sent = (await mock.received())[-1]["body"]
    assert sent["model"] == "claude-sonnet-4-5"
    assert sent["metadata"] == {"user_id": "user-42"}


async def test_completions_stream_from_anthropic_with_usage(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 8  # from message_delta
    assert usage.prompt_tokens > 0  # from message_start


async def test_anthropic_tool_use_becomes_an_openai_tool_call(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock, "tool_call=1"))
    completion = await sdk(client).chat.completions.create(
        model="auto",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_mock_1"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = (await mock.received())[-1]["body"]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


async def test_anthropic_streamed_tool_use_arrives_as_deltas(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock, "tool_call=1"))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "toolu_mock_1"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_history_is_sent_as_anthropic_blocks(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather"}}
    call["function"]["arguments"] = '{"city": "Paris"}'  # type: ignore[index]
    history: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    await sdk(client).chat.completions.create(model="auto", messages=history, tools=[WEATHER_TOOL])
    sent = (await mock.received())[-1]["body"]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }


async def test_tool_call_arguments_that_are_not_json_are_a_400(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic(mock))
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    history = [*MESSAGES, {"role": "assistant", "content": "", "tool_calls": [call]}]
    response = await client.post("/v1/chat/completions", json={"messages": history})
    assert response.status == 400
    assert "tool call arguments" in (await response.json())["error"]["message"]
    health = await (await client.get("/health")).json()
    assert health["providers"]["anthropic"]["state"] == "ok"
    assert await mock.count("") == 0


@pytest.mark.parametrize("path", ["/stream", "/v1/chat/completions"])
async def test_anthropic_error_event_mid_stream_cuts_the_stream(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    client = await gateway(**anthropic(mock, "stream_error_after=3"))
    body = {**USER, "stream": True}
    response = await client.post(path, json=body, headers={"X-Request-ID": "cut-anthropic"})
    assert response.status == 200
    events = parse_sse(await response.text())
    error = cut_stream_error(events)
    assert error["request_id"] == "cut-anthropic"
    assert "anthropic failed mid-stream: server_error" in error["message"]
    assert "overloaded_error" in error["message"]
    if path == "/stream":
        assert "".join(d for k, d in events[:-1]) == "Hello from the"
    else:
        assert completion_text(events[:-1]) == "Hello from the"


async def test_sdk_raises_api_error_on_an_anthropic_error_event(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic(mock, "stream_error_after=2"))
    stream = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="overloaded_error"):
        async for _chunk in stream:
            pass


@pytest.mark.parametrize("spec", ["status=529", "stream_error_after=0", "status=429"])
@pytest.mark.parametrize("path", ["/chat", "/stream", "/v1/chat/completions"])
async def test_failing_anthropic_falls_over_before_the_first_byte(
    gateway: Gateway, mock: Mock, spec: str, path: str
) -> None:
    env = two_providers(mock, ANTHROPIC_API_KEY=ANTHROPIC_KEY, ANTHROPIC_RATE_LIMIT="0")
    env |= {"PROVIDER_ORDER": "anthropic,groq", "ANTHROPIC_BASE_URL": mock.base(spec, "anthropic")}
    client = await gateway(**env)
    response = await client.post(path, json={**USER, "stream": path != "/chat"})
    assert response.status == 200
    assert response.headers["x-modelrouter-provider"] == "groq"
    await response.read()
    health = await (await client.get("/health")).json()
    reason = "rate_limited" if spec == "status=429" else "server_error"  # 529: overloaded
    assert health["providers"]["anthropic"]["last_reason"] == reason


async def test_anthropic_rejecting_the_request_is_a_400_without_blacklist(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic(mock, "status=400"))
    response = await client.post("/v1/chat/completions", json=USER)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert "mock error 400" in error["message"]
    health = await (await client.get("/health")).json()
    assert health["providers"]["anthropic"]["state"] == "ok"


# --- Anthropic's documented rules, end to end: refused requests go to a provider that takes them


def anthropic_then_groq(mock: Mock) -> dict[str, str]:
    env = two_providers(mock, ANTHROPIC_API_KEY=ANTHROPIC_KEY, ANTHROPIC_RATE_LIMIT="0")
    return env | {
        "PROVIDER_ORDER": "anthropic,groq",
        "ANTHROPIC_BASE_URL": mock.base("", "anthropic"),
    }


LATE_SYSTEM: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "system", "content": "answer in French from now on"},
    {"role": "user", "content": "how are you?"},
]


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({"temperature": 1.5}, {"temperature": 1.5}),
        ({"temperature": 0.2, "top_p": 0.5}, {"temperature": 0.2, "top_p": 0.5}),
        ({"stop": ["\n"]}, {"stop": ["\n"]}),
        ({"messages": LATE_SYSTEM}, {"messages": LATE_SYSTEM}),
    ],
    ids=["temperature-above-1", "temperature-and-top_p", "whitespace-stop", "late-system"],
)
async def test_what_anthropic_refuses_is_served_unchanged_by_the_next_provider(
    gateway: Gateway, mock: Mock, path: str, fields: dict[str, Any], sent: dict[str, Any]
) -> None:
    client = await gateway(**anthropic_then_groq(mock))
    response = await client.post(path, json={**USER, **fields})
    assert response.status == 200, await response.text()
    assert response.headers["x-modelrouter-provider"] == "groq"
    received = await mock.received()
    assert [r["path"] for r in received] == ["/v1/chat/completions"], "anthropic never asked"
    for key, value in sent.items():
        assert received[0]["body"][key] == value, "sent as given, no clamp, nothing moved"
    health = await (await client.get("/health")).json()
    assert health["providers"]["anthropic"]["state"] == "ok"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 1.2}, "temperature"),
        ({"temperature": 0.2, "top_p": 0.5}, "top_p"),
        ({"messages": LATE_SYSTEM}, "messages"),
    ],
)
async def test_naming_anthropic_for_what_it_refuses_is_a_400_naming_the_parameter(
    gateway: Gateway, mock: Mock, fields: dict[str, Any], param: str
) -> None:
    client = await gateway(**anthropic_then_groq(mock))
    body = {**USER, **fields, "model": "anthropic/claude-haiku-4-5"}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == param
    assert "'anthropic'" in error["message"]
    assert await mock.count("") == 0


async def test_anthropic_gets_one_of_temperature_and_top_p(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    response = await client.post("/chat", json={**USER, "temperature": 0.3, "top_p": 1.0})
    assert response.status == 200
    sent = (await mock.received())[-1]["body"]
    assert (sent["temperature"], "top_p" in sent) == (0.3, False)


async def test_anthropic_gets_no_empty_assistant_turn(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic(mock))
    turns = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None},  # as some clients keep an empty reply
        {"role": "user", "content": "second"},
    ]
    completion = await sdk(client).chat.completions.create(model="auto", messages=turns)
    assert completion.choices[0].message.content == MOCK_TEXT
    assert (await mock.received())[-1]["body"]["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]
