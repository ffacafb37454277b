"""The official `anthropic` Python package, unchanged, against `/v1/messages` of a live gateway:
to an Anthropic deployment (the body passed through) and to an OpenAI-compatible one (mapped)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from aiohttp.test_utils import TestClient

from modelrouter.mock.anthropic import THINKING_TEXT, thinking_signature
from tests.conftest import CLIENT_KEY, GROQ_KEY, Gateway, Mock, parse_sse, two_providers
from tests.test_anthropic import ANTHROPIC_KEY

MOCK_TEXT = "Hello from the mock provider.\nSecond line"
SYSTEM = "be brief"
USER: list[Any] = [{"role": "user", "content": "hello there"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


def anthropic_env(mock: Mock, spec: str = "", **extra: str) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "anthropic",
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": mock.base(spec, flavour="anthropic"),
        "ANTHROPIC_RATE_LIMIT": "0",
        "API_KEY": CLIENT_KEY,
        **extra,
    }


def sdk(client: TestClient[Any, Any], key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key=key, max_retries=0)


async def last_sent(mock: Mock) -> dict[str, Any]:
    sent: dict[str, Any] = (await mock.received())[-1]
    return sent


# -- to an Anthropic deployment: passed through ----------------------------------------------


async def test_create_to_anthropic_passes_the_body_through(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    message = await sdk(client).messages.create(
        model="anthropic/claude-sonnet-4-5",
        max_tokens=100,
        system=system,
        messages=USER,
        metadata={"user_id": "dev-7"},
        extra_body={"top_k": 5},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14,made-up-beta"},
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 8
    assert message.usage.input_tokens > 0
    assert message.model == "anthropic/claude-sonnet-4-5"
    sent = await last_sent(mock)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY  # the deployment's key, not the client's
    assert sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    body = sent["body"]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == system  # cache_control kept
    assert body["metadata"] == {"user_id": "dev-7"}
    assert body["top_k"] == 5
    assert body["max_tokens"] == 100


async def test_stream_to_anthropic_gives_thinking_then_text(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    async with sdk(client).messages.stream(
        model="anthropic/claude-sonnet-4-5", max_tokens=2048, messages=USER, thinking=THINKING
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start"
    assert "thinking" in kinds
    assert "signature" in kinds
    assert kinds[-1] == "message_stop"
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == THINKING_TEXT
    assert thinking.signature == thinking_signature(THINKING_TEXT)
    assert text.type == "text"
    assert text.text == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_block_goes_back_with_its_signature(
    gateway: Gateway, mock: Mock, stream: bool
) -> None:
    """The mock refuses a thinking block whose signature is not the one it gave: the second
    turn passes only if the block came back to the SDK, and went up again, unchanged."""
    client = await gateway(**anthropic_env(mock))
    api = sdk(client)
    first = await api.messages.create(
        model="anthropic/claude-sonnet-4-5", max_tokens=2048, messages=USER, thinking=THINKING
    )
    assert first.content[0].type == "thinking"
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": "and now?"},
    ]
    if stream:
        async with api.messages.stream(
            model="anthropic/claude-sonnet-4-5",
            max_tokens=2048,
            messages=history,
            thinking=THINKING,
        ) as events:
            second = await events.get_final_message()
    else:
        second = await api.messages.create(
            model="anthropic/claude-sonnet-4-5",
            max_tokens=2048,
            messages=history,
            thinking=THINKING,
        )
    assert second.content[-1].text == MOCK_TEXT  # type: ignore[union-attr]
    sent = (await last_sent(mock))["body"]["messages"][1]["content"][0]
    assert sent == {
        "type": "thinking",
        "thinking": THINKING_TEXT,
        "signature": thinking_signature(THINKING_TEXT),
    }


async def test_a_changed_thinking_block_is_the_upstreams_400(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    forged = {"type": "thinking", "thinking": "changed", "signature": "sig_forged"}
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [forged, {"type": "text", "text": "hi"}]},
        {"role": "user", "content": "and now?"},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sdk(client).messages.create(
            model="anthropic/claude-sonnet-4-5", max_tokens=100, messages=history
        )
    assert "signature" in str(caught.value)


async def tool_round_trip(client: TestClient[Any, Any], *, stream: bool) -> anthropic.types.Message:
    """Get a tool call, send its result back as the SDK's users do; the first answer."""
    api = sdk(client)
    ask: dict[str, Any] = {"model": "auto", "max_tokens": 200, "tools": [WEATHER]}
    if stream:
        async with api.messages.stream(messages=USER, **ask) as events:
            first = await events.get_final_message()
    else:
        first = await api.messages.create(messages=USER, **ask)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.input == {"city": "Paris"}
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        },
    ]
    await api.messages.create(messages=history, **ask)
    return first


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_to_anthropic(gateway: Gateway, mock: Mock, stream: bool) -> None:
    client = await gateway(**anthropic_env(mock, "tool_call=1"))
    first = await tool_round_trip(client, stream=stream)
    assert first.content[-1].id == "toolu_mock_1"  # type: ignore[union-attr]
    body = (await last_sent(mock))["body"]
    assert body["tools"] == [WEATHER]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny"}
    ]


# -- to an OpenAI-compatible deployment: mapped ----------------------------------------------


async def test_create_to_openai_compatible_is_mapped(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    message = await sdk(client).messages.create(
        model="auto",
        max_tokens=100,
        system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        messages=USER,
        stop_sequences=["END"],
    )
    assert message.content[0].text == MOCK_TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 8
    assert message.model == "groq/llama-3.3-70b-versatile"
    body = (await last_sent(mock))["body"]
    assert body["messages"] == [{"role": "system", "content": SYSTEM}, *USER]
    assert body["max_tokens"] == 100
    assert body["stop"] == ["END"]


async def test_stream_to_openai_compatible_is_mapped(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    async with sdk(client).messages.stream(model="auto", max_tokens=100, messages=USER) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_to_openai_compatible(
    gateway: Gateway, mock: Mock, stream: bool
) -> None:
    client = await gateway(**two_providers(mock, groq="tool_call=1", API_KEY=CLIENT_KEY))
    first = await tool_round_trip(client, stream=stream)
    call_id = first.content[-1].id  # type: ignore[union-attr]
    body = (await last_sent(mock))["body"]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assistant, result = body["messages"][1:]
    assert assistant["tool_calls"][0]["id"] == call_id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert result == {"role": "tool", "content": "sunny", "tool_call_id": call_id}


async def test_thinking_blocks_of_earlier_turns_are_dropped_for_openai(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    block = {"type": "thinking", "thinking": THINKING_TEXT, "signature": "sig"}
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [block, {"type": "text", "text": "Hi!"}]},
        {"role": "user", "content": "and now?"},
    ]
    message = await sdk(client).messages.create(
        model="auto", max_tokens=100, messages=history, thinking=THINKING
    )
    assert message.content[0].text == MOCK_TEXT  # type: ignore[union-attr]
    body = (await last_sent(mock))["body"]
    assert body["messages"][1] == {"role": "assistant", "content": "Hi!"}
    assert "thinking" not in body


async def test_images_skip_a_deployment_that_cannot_take_them(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sdk(client).messages.create(
            model="auto",
            max_tokens=100,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
        )
    assert "images" in caught.value.message
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# -- errors ------------------------------------------------------------------------------------


async def test_unknown_model_is_not_found(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    with pytest.raises(anthropic.NotFoundError) as caught:
        await sdk(client).messages.create(model="nobody/serves-this", max_tokens=10, messages=USER)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert caught.value.body["request_id"]  # type: ignore[index]


async def test_bad_key_is_an_authentication_error(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await sdk(client, key="wrong").messages.create(model="auto", max_tokens=10, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


async def test_bearer_token_authenticates_as_claude_code_sends_it(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic_env(mock))
    api = anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), auth_token=CLIENT_KEY, max_retries=0
    )
    message = await api.messages.create(model="auto", max_tokens=10, messages=USER)
    assert message.content[0].text == MOCK_TEXT  # type: ignore[union-attr]


async def test_over_the_rate_limit_is_a_rate_limit_error(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock, ANTHROPIC_RATE_LIMIT="1"))
    api = sdk(client)
    await api.messages.create(model="auto", max_tokens=10, messages=USER)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await api.messages.create(model="auto", max_tokens=10, messages=USER)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers["retry-after"]


async def test_bad_request_is_an_invalid_request_error(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock))
    response = await client.post(
        "/v1/messages",
        json={"model": "auto", "messages": USER},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    )
    assert response.status == 400
    body = await response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]


# -- Claude Code's requests --------------------------------------------------------------------

CLAUDE_CODE_HEADERS = {
    "Authorization": f"Bearer {CLIENT_KEY}",  # ANTHROPIC_AUTH_TOKEN
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "fine-grained-tool-streaming-2025-05-14,some-future-beta-2099-01-01",
    "x-app": "cli",
    "User-Agent": "claude-cli/2.0.0 (external, cli)",
}


def claude_code_body(model: str) -> dict[str, Any]:
    """A request in the shape Claude Code sends: system blocks marked for the prompt cache,
    its tools with JSON Schema's `$schema`, a user turn of several text blocks, streaming."""
    cached = {"type": "ephemeral"}
    bash = {
        "name": "Bash",
        "description": "Executes a given bash command",
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
            "additionalProperties": False,
        },
    }
    return {
        "model": model,
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": cached},
            {"type": "text", "text": "Working directory: /src", "cache_control": cached},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>be careful</system-reminder>"},
                    {"type": "text", "text": "fix the bug", "cache_control": cached},
                ],
            }
        ],
        "tools": [bash],
        "metadata": {"user_id": "user_0123_account__session_4567"},
    }


async def replay_claude_code(client: TestClient[Any, Any], model: str) -> list[tuple[str, Any]]:
    response = await client.post(
        "/v1/messages", json=claude_code_body(model), headers=CLAUDE_CODE_HEADERS
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return [(kind, json.loads(data)) for kind, data in parse_sse(await response.text())]


async def test_claude_code_request_to_anthropic(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock, "tool_call=1"))
    events = await replay_claude_code(client, "anthropic/claude-sonnet-4-5")
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert all(kind == data["type"] for kind, data in events)
    start = next(data for kind, data in events if kind == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    sent = await last_sent(mock)
    assert sent["body"] == claude_code_body("claude-sonnet-4-5")  # as received, model aside
    assert sent["headers"]["anthropic-beta"] == (
        "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    )


async def test_claude_code_request_to_openai_compatible(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="tool_call=1", API_KEY=CLIENT_KEY))
    events = await replay_claude_code(client, "auto")
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    pieces = [d["delta"]["partial_json"] for k, d in events if k == "content_block_delta"]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    body = (await last_sent(mock))["body"]
    assert body["messages"] == [
        {"role": "system", "content": "You are Claude Code.\nWorking directory: /src"},
        {"role": "user", "content": "<system-reminder>be careful</system-reminder>\nfix the bug"},
    ]
    assert body["tools"][0]["function"]["name"] == "Bash"
    assert body["user"] == "user_0123_account__session_4567"


# -- count_tokens ------------------------------------------------------------------------------


async def test_count_tokens_is_answered_by_the_anthropic_deployment(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic_env(mock))
    counted = await sdk(client).messages.count_tokens(
        model="anthropic/claude-sonnet-4-5", system=SYSTEM, messages=USER, tools=[WEATHER]
    )
    assert counted.input_tokens == 4  # the mock's count: "be brief" and "hello there"
    sent = await last_sent(mock)
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",
        "system": SYSTEM,
        "messages": USER,
        "tools": [WEATHER],
    }


async def test_count_tokens_is_a_400_where_the_model_cannot_count(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=CLIENT_KEY))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sdk(client).messages.count_tokens(model="auto", messages=USER)
    assert "token counting is not available for model 'auto'" in caught.value.message
    assert await mock.received() == []  # never an estimate, never a call


async def test_count_tokens_counts_against_the_rate_limit_and_costs_nothing(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic_env(mock, ANTHROPIC_RATE_LIMIT="1"))
    api = sdk(client)
    raw = await api.messages.with_raw_response.count_tokens(model="auto", messages=USER)
    assert "x-modelrouter-cost-usd" not in raw.headers
    with pytest.raises(anthropic.RateLimitError):
        await api.messages.create(model="auto", max_tokens=10, messages=USER)


# -- routed like every request -----------------------------------------------------------------


async def test_falls_over_from_anthropic_to_a_mapped_deployment(
    gateway: Gateway, mock: Mock
) -> None:
    env = anthropic_env(mock, "status=500") | {
        "PROVIDER_ORDER": "anthropic,groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": mock.base(),
        "GROQ_RATE_LIMIT": "0",
    }
    client = await gateway(**env)
    async with sdk(client).messages.stream(model="auto", max_tokens=50, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.model == "groq/llama-3.3-70b-versatile"
    assert final.content[0].text == MOCK_TEXT  # type: ignore[union-attr]
    first, second = (sent["path"] for sent in (await mock.received())[-2:])
    assert (first, second) == ("/x/status=500/v1/messages", "/v1/chat/completions")


async def test_a_stream_cut_midway_ends_with_an_error_event(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock, "stream_error_after=3"))
    response = await client.post(
        "/v1/messages",
        json={"model": "auto", "max_tokens": 50, "messages": USER, "stream": True},
        headers={"x-api-key": CLIENT_KEY},
    )
    events = parse_sse(await response.text())
    kinds = [kind for kind, _ in events]
    assert "content_block_delta" in kinds
    assert "message_stop" not in kinds
    assert kinds[-1] == "error"
    error = json.loads(events[-1][1])
    assert error["type"] == "error"
    assert error["request_id"] == response.headers["X-Request-ID"]


async def test_a_cached_answer_replays_its_thinking(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**anthropic_env(mock, CACHE_MODE="all"))
    api = sdk(client)
    ask: dict[str, Any] = {
        "model": "anthropic/claude-sonnet-4-5",
        "max_tokens": 2048,
        "messages": USER,
        "thinking": THINKING,
    }
    first = await api.messages.with_raw_response.create(**ask)
    second = await api.messages.with_raw_response.create(**ask)
    assert first.headers["x-modelrouter-cache"] == "miss"
    assert second.headers["x-modelrouter-cache"] == "hit"
    replayed, original = await second.parse(), await first.parse()
    assert replayed.content == original.content
    assert replayed.content[0].type == "thinking"
    assert len(await mock.received()) == 1
