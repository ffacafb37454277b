"""Anthropic's Messages format, unit by unit: reading a request (what is mapped, what is lost)
and writing an answer (whole, and as its stream of named events)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from modelrouter.errors import ApiError
from modelrouter.events import Answering, Chunk, Done, Failed, Thinking, ToolCallDelta, Usage
from modelrouter.schemas import CountChat, NamedToolChoice, NativeChat
from modelrouter.web.anthropic_format import AnthropicStream, message_body, stop_reason
from modelrouter.web.anthropic_request import parse_messages_request
from tests.conftest import parse_sse

ANSWERING = Answering("anthropic", "claude-x", 1)
USER = [{"role": "user", "content": "hi"}]


def parse(body: dict[str, Any], **options: Any) -> NativeChat:
    return parse_messages_request(msgspec.json.encode(body), **options).chat


def lost(chat: NativeChat) -> set[str]:
    return {what for what, _ in chat.native.lost}


# -- reading -----------------------------------------------------------------------------------


def test_text_turns_and_system_blocks_are_mapped() -> None:
    chat = parse(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "x"}]},
                {"role": "assistant", "content": "y"},
                {"role": "user", "content": "z"},
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u"},
        }
    )
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "a\nb"),
        ("user", "x"),
        ("assistant", "y"),
        ("user", "z"),
    ]
    assert (chat.max_tokens, chat.temperature, chat.top_p) == (5, 0.5, 0.9)
    assert (chat.stop, chat.user, chat.model) == (["END"], "u", "m")
    assert chat.native.lost == ()


def test_tool_use_and_results_become_calls_and_tool_turns() -> None:
    chat = parse(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "let me look"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": "boom",
                            "is_error": True,
                        },
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        }
    )
    assistant, tool, user = chat.messages[1:]
    assert assistant.content == "let me look"
    assert assistant.tool_calls is not None
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"a": 1}
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "[tool error] boom", "t1")
    assert (user.role, user.content) == ("user", "and?")
    assert chat.tool_choice == NamedToolChoice("function", chat.tool_choice.function)  # type: ignore[union-attr]
    assert chat.tool_choice.function.name == "f"  # type: ignore[union-attr]
    assert chat.parallel_tool_calls is False


@pytest.mark.parametrize(
    ("given", "expected"), [("auto", "auto"), ("any", "required"), ("none", "none")]
)
def test_tool_choice_types_map_onto_openais(given: str, expected: str) -> None:
    chat = parse({"model": "m", "max_tokens": 5, "messages": USER, "tool_choice": {"type": given}})
    assert chat.tool_choice == expected


def test_what_the_mapping_cannot_carry_is_noted_as_lost() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "d"},
    }
    chat = parse(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [image, document, {"type": "text", "text": "?"}]}
            ],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "top_k": 3,
            "container": "c",
        }
    )
    assert lost(chat) == {"images", "documents", "web_search_20250305 tool", "top_k", "container"}


def test_thinking_is_dropped_from_the_mapping_but_kept_in_the_body() -> None:
    block = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    body = {
        "model": "m",
        "max_tokens": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            *USER,
            {"role": "assistant", "content": [block, redacted, {"type": "text", "text": "ok"}]},
            *USER,
        ],
    }
    chat = parse(body, betas="b1")
    assert [(m.role, m.content) for m in chat.messages[1:2]] == [("assistant", "ok")]
    assert msgspec.json.decode(chat.native.body) == body  # kept as received
    assert chat.native.betas == "b1"
    assert lost(chat) == set()


def test_count_tokens_takes_no_max_tokens_and_is_a_count() -> None:
    parsed = parse_messages_request(
        msgspec.json.encode({"model": "m", "messages": USER}), counting=True
    )
    assert type(parsed.chat) is CountChat
    assert parsed.stream is False


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "Expected `object`"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": 5, "messages": []}', "$.messages"),
        (b'{"model": "m", "max_tokens": 5, "messages": [], "odd": 1}', "$.messages"),
        (b'{"model": "m", "max_tokens": 5, "tools": [{"name": ""}], "messages": []}', "$.tools"),
        (
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}',
            "invalid request",
        ),
        (
            b'{"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}',
            "invalid request",
        ),
        (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_bad_requests_are_400s_that_say_why(body: bytes, says: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_messages_request(body)
    assert caught.value.status == 400
    assert says in caught.value.message


# -- writing -----------------------------------------------------------------------------------


def test_whole_message_has_thinking_text_then_tool_use() -> None:
    body = json.loads(
        message_body(
            ANSWERING,
            request_id="r1",
            text="hello",
            tool_calls=[ToolCallDelta(0, "c1", "f", '{"a":'), ToolCallDelta(0, arguments=" 1}")],
            thinking=[Thinking(0, "hm"), Thinking(0, "m", "sig"), Thinking(1, redacted="opaque")],
            usage=Usage(10, 5, cached_input=3, cache_write=2),
            finish_reason="tool_calls",
        )
    )
    assert body["id"] == "msg_r1"
    assert body["model"] == "anthropic/claude-x"
    assert body["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "hello"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
    ]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {
        "input_tokens": 5,
        "output_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
    }


def test_tool_arguments_that_are_not_an_object_become_an_empty_input() -> None:
    body = json.loads(
        message_body(
            ANSWERING,
            request_id="r",
            text="",
            tool_calls=[ToolCallDelta(0, "c", "f", "not json")],
            thinking=[],
            usage=Usage(),
            finish_reason="tool_calls",
        )
    )
    assert body["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("odd", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_map_back_onto_stop_reasons(finish: str | None, stop: str) -> None:
    assert stop_reason(finish) == stop


def stream_events(*events: Any) -> list[tuple[str, dict[str, Any]]]:
    fmt = AnthropicStream("r1")
    out = fmt.start(ANSWERING) + b"".join(fmt.event(e) for e in events)
    return [(kind, json.loads(data)) for kind, data in parse_sse(out.decode())]


def test_stream_opens_and_closes_one_block_per_kind_in_order() -> None:
    events = stream_events(
        Thinking(0),
        Thinking(0, "hm"),
        Thinking(0, signature="sig"),
        Thinking(1, redacted="opaque"),
        Chunk("Hel"),
        Chunk("lo"),
        ToolCallDelta(3, "c1", "f", ""),
        ToolCallDelta(3, arguments='{"a": 1}'),
        ToolCallDelta(4, "c2", "g", "{}"),
        Usage(7, 4),
        Done("tool_calls"),
    )
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    starts = [
        (d["index"], d["content_block"]["type"]) for k, d in events if k == "content_block_start"
    ]
    assert starts == [
        (0, "thinking"),
        (1, "redacted_thinking"),
        (2, "text"),
        (3, "tool_use"),
        (4, "tool_use"),
    ]
    stops = [d["index"] for k, d in events if k == "content_block_stop"]
    assert stops == [0, 1, 2, 3, 4]
    deltas = [(d["index"], d["delta"]) for k, d in events if k == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "hm"}),
        (0, {"type": "signature_delta", "signature": "sig"}),
        (2, {"type": "text_delta", "text": "Hel"}),
        (2, {"type": "text_delta", "text": "lo"}),
        (3, {"type": "input_json_delta", "partial_json": '{"a": 1}'}),
        (4, {"type": "input_json_delta", "partial_json": "{}"}),
    ]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"]["input_tokens"] == 7
    assert final["usage"]["output_tokens"] == 4


def test_a_cut_stream_ends_with_an_error_event_and_no_message_stop() -> None:
    events = stream_events(Chunk("Hel"), Failed(502, "upstream_error", "cut", retryable=True))
    kinds = [kind for kind, _ in events]
    assert "message_stop" not in kinds
    assert kinds[-2:] == ["content_block_stop", "error"]
    error = events[-1][1]
    assert error["type"] == "error"
    assert error["error"] == {"type": "api_error", "message": "cut"}
    assert error["request_id"] == "r1"
