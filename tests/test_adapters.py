"""One behaviour suite that every provider adapter must pass, plus status and Retry-After rules.

The suite is parametrized over `modelrouter.providers.ADAPTERS`, so an adapter added there is
tested automatically; it only needs an entry in `WIRE` below with sample upstream bytes in its own
wire format (a missing entry fails `test_every_adapter_has_wire_samples`).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from modelrouter.config import ProviderSettings
from modelrouter.events import Chunk, Done, Event, Finish, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers import (
    ADAPTERS,
    Adapter,
    classify_status,
    parse_retry_after,
    requested_features,
)
from modelrouter.providers.base import FEATURES
from modelrouter.schemas import ChatRequest, chat_request_decoder

PIECES = ["Hel", "lo, ", "wörld ", "🙂", ' "quoted"\n', "and\ttabs", " — done."]
TEXT = "".join(PIECES)
USAGE = Usage(prompt_tokens=11, completion_tokens=7)
API_KEY = "test-key-0123456789abcdef"
BASE_URL = "http://upstream.test:8080/v1"


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# --- OpenAI Chat Completions (Groq, OpenRouter, OpenAI): SSE -----------------------------------


def _openai_response(text: str, usage: Usage) -> bytes:
    return _json(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
    )


def _openai_delta(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return _json({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]})


def _openai_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    usage_chunk = _json(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            },
        }
    )
    return [
        _openai_delta({"role": "assistant", "content": ""}),
        *(_openai_delta({"content": piece}) for piece in pieces),
        _openai_delta({}, finish_reason="stop"),
        usage_chunk,
        b"[DONE]",
    ]


def _sse(payloads: list[bytes]) -> bytes:
    # A comment (as OpenRouter sends while processing) and an event name line, both to be ignored.
    out = b": OPENROUTER PROCESSING\n\n"
    for payload in payloads:
        out += b"event: message\ndata: " + payload + b"\n\n"
    return out


def _openai_options(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_tokens": body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": body.get("stop"),
    }


# --- Ollama native chat: NDJSON ----------------------------------------------------------------


def _ollama_response(text: str, usage: Usage) -> bytes:
    return _json(
        {
            "model": "m",
            "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": usage.prompt_tokens,
            "eval_count": usage.completion_tokens,
        }
    )


def _ollama_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    def line(content: str) -> bytes:
        message = {"role": "assistant", "content": content}
        return _json({"model": "m", "message": message, "done": False})

    final = {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": usage.prompt_tokens,
        "eval_count": usage.completion_tokens,
    }
    return [*(line(piece) for piece in pieces), _json(final)]


def _ndjson(payloads: list[bytes]) -> bytes:
    return b"".join(payload + b"\n" for payload in payloads)


def _ollama_options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options", {})
    return {
        "max_tokens": options.get("num_predict"),
        "temperature": options.get("temperature"),
        "top_p": options.get("top_p"),
        "stop": options.get("stop"),
    }


# --- Anthropic Messages: SSE with named events -------------------------------------------------


def _anthropic_message(content: list[dict[str, Any]], usage: Usage, stop: str | None) -> bytes:
    return _json(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            },
        }
    )


def _anthropic_response(text: str, usage: Usage) -> bytes:
    return _anthropic_message([{"type": "text", "text": text}], usage, "end_turn")


def _anthropic_delta(piece: str) -> bytes:
    delta = {"type": "text_delta", "text": piece}
    return _json({"type": "content_block_delta", "index": 0, "delta": delta})


def _anthropic_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    start = json.loads(_anthropic_message([], Usage(usage.prompt_tokens, 1), None))
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": usage.completion_tokens},
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return [
        _json({"type": "message_start", "message": start}),
        _json(block),
        _json({"type": "ping"}),
        *(_anthropic_delta(piece) for piece in pieces),
        _json({"type": "content_block_stop", "index": 0}),
        _json(message_delta),
        _json({"type": "message_stop"}),
    ]


def _named_sse(payloads: list[bytes]) -> bytes:
    """Anthropic's framing: each event named after its `type` (an unparseable one is `bogus`)."""
    out = b""
    for payload in payloads:
        try:
            name = json.loads(payload)["type"].encode()
        except (ValueError, KeyError, TypeError):
            name = b"bogus"
        out += b"event: " + name + b"\ndata: " + payload + b"\n\n"
    return out


def _anthropic_error(kind: str, message: str) -> bytes:
    return _json({"type": "error", "error": {"type": kind, "message": message}})


def _anthropic_options(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_tokens": body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": body.get("stop_sequences"),
    }


def _anthropic_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": body["system"]}] if "system" in body else []
    return [*system, *body["messages"]]


# --- The per-adapter samples -------------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """Sample upstream bytes in one adapter's wire format."""

    path: str  # appended to the base URL by `endpoint`
    response: Callable[[str, Usage], bytes]  # a whole (non-streamed) answer
    payloads: Callable[[list[str], Usage], list[bytes]]  # a stream's payloads, end marker included
    frame: Callable[[list[bytes]], bytes]  # payloads as the bytes on the wire
    error_body: Callable[[str], bytes]  # the body of a non-2xx answer
    stream_errors: Callable[[str], list[tuple[bytes, str]]]  # in-stream errors, expected reason
    malformed: Callable[[], list[bytes]]  # bodies/payloads that must be `bad_response`
    options: Callable[[dict[str, Any]], dict[str, Any]]  # sampling options, in our names
    auth: Callable[[str], dict[str, str]] = lambda key: {"Authorization": f"Bearer {key}"}
    conversation: Callable[[dict[str, Any]], list[Any]] = lambda body: body["messages"]
    default_max_tokens: int | None = None  # sent when the request sets none


GENERIC_MALFORMED = [
    b"",
    b"{",
    b'{"choices": [',
    b"not json at all",
    b"<html>502 Bad Gateway</html>",
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b"\xff\xfe\x00",
]

WIRE: dict[str, Wire] = {
    "openai": Wire(
        path="/chat/completions",
        response=_openai_response,
        payloads=_openai_payloads,
        frame=_sse,
        error_body=lambda message: _json(
            {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        ),
        stream_errors=lambda message: [
            (_json({"error": {"message": message, "type": "server_error"}}), "server_error"),
            (_json({"error": {"message": message, "code": 502}}), "server_error"),
            # OpenRouter's shape: a numeric code.
            (_json({"error": {"message": message, "code": 429}}), "rate_limited"),
            (_json({"error": {"message": message, "type": "rate_limit_error"}}), "rate_limited"),
        ],
        malformed=lambda: [
            *GENERIC_MALFORMED,
            b'{"choices": "nope"}',
            b'{"choices": [{"message": {"content": 5}, "delta": {"content": 5}}]}',
            b'{"choices": [{"message": {"content": "x"}, "delta": {"content": "x"}}],'
            b' "usage": {"prompt_tokens": "many"}}',
        ],
        options=_openai_options,
    ),
    "ollama": Wire(
        path="/api/chat",
        response=_ollama_response,
        payloads=_ollama_payloads,
        frame=_ndjson,
        error_body=lambda message: _json({"error": message}),
        stream_errors=lambda message: [(_json({"error": message}), "server_error")],
        malformed=lambda: [
            *GENERIC_MALFORMED,
            b'{"message": "hi", "done": false}',
            b'{"message": {"content": 5}, "done": false}',
            b'{"message": {"content": "x"}, "done": "yes"}',
        ],
        options=_ollama_options,
    ),
    "anthropic": Wire(
        path="/v1/messages",
        response=_anthropic_response,
        payloads=_anthropic_payloads,
        frame=_named_sse,
        error_body=lambda message: _anthropic_error("invalid_request_error", message),
        stream_errors=lambda message: [
            (_anthropic_error("overloaded_error", message), "server_error"),
            (_anthropic_error("api_error", message), "server_error"),
            (_anthropic_error("rate_limit_error", message), "rate_limited"),
        ],
        malformed=lambda: [
            *GENERIC_MALFORMED,
            b'{"type": 5}',
            b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}',
            b'{"type": "message_start", "message": {"content": "hi"}}',
            b'{"type": "message_delta", "usage": {"output_tokens": "many"}}',
        ],
        options=_anthropic_options,
        auth=lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"},
        conversation=_anthropic_conversation,
        default_max_tokens=4096,
    ),
}


# --- Fixtures ----------------------------------------------------------------------------------


def settings_for(
    kind: str, *, api_key: str | None = API_KEY, base_url: str = BASE_URL
) -> ProviderSettings:
    return ProviderSettings(
        name=f"test-{kind}",
        kind=kind,  # type: ignore[arg-type]
        base_url=base_url,
        model="configured-model",
        api_key=api_key,
        rate_limit=0,
        max_concurrency=4,
    )


@pytest.fixture(params=sorted(ADAPTERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wire(kind: str) -> Wire:
    if kind not in WIRE:
        pytest.fail(f"adapter {kind!r} has no WIRE samples: add its wire format to this suite")
    return WIRE[kind]


@pytest.fixture
def adapter(kind: str) -> Adapter:
    return ADAPTERS[kind](settings_for(kind))


def request_of(**fields: Any) -> ChatRequest:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello — 🙂"},
        ],
        **fields,
    }
    return chat_request_decoder.decode(msgspec.json.encode(body))


def events_of(adapter: Adapter, payloads: list[bytes]) -> list[Event]:
    return [event for payload in payloads for event in adapter.map_chunk(payload)]


def run_stream(adapter: Adapter, data: bytes, step: int | None = None) -> list[Event]:
    """Feed `data` through the adapter's framer in reads of `step` bytes, mapping each payload."""
    framer = adapter.framer()
    step = step or max(len(data), 1)
    events: list[Event] = []
    for start in range(0, len(data), step):
        events += events_of(adapter, framer.feed(data[start : start + step]))
    events += events_of(adapter, framer.finish())
    return events


def as_list(stop: str | list[str] | None) -> list[str] | None:
    return [stop] if isinstance(stop, str) else stop


def text_only(adapter: Adapter, payloads: list[bytes]) -> list[bytes]:
    """The leading payloads of a stream that carry nothing but text (no usage, no end)."""
    out: list[bytes] = []
    for payload in payloads:
        if not all(isinstance(event, Chunk) for event in adapter.map_chunk(payload)):
            break
        out.append(payload)
    return out


def text_of(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, Chunk))


def usage_of(events: list[Event]) -> list[Usage]:
    return [event for event in events if isinstance(event, Usage)]


def merged_usage(events: list[Event]) -> Usage:
    """Usage as the relay sees it: an adapter may report it in cumulative pieces."""
    usage = Usage()
    for piece in usage_of(events):
        usage = usage.merge(piece)
    return usage


# --- The shared suite --------------------------------------------------------------------------


def test_every_adapter_has_wire_samples() -> None:
    assert set(ADAPTERS) <= set(WIRE), f"adapters without samples: {set(ADAPTERS) - set(WIRE)}"


def test_adapter_declares_a_known_framing(adapter: Adapter) -> None:
    assert adapter.framing in ("sse", "ndjson")


def test_framer_is_fresh_for_each_stream(adapter: Adapter) -> None:
    assert adapter.framer() is not adapter.framer()


def test_adapter_keeps_name_and_model_from_settings(adapter: Adapter, kind: str) -> None:
    assert adapter.name == f"test-{kind}"
    assert adapter.model == "configured-model"
    assert adapter.base_url == BASE_URL


@pytest.mark.parametrize(
    "base_url",
    ["http://upstream.test:8080/v1", "https://api.example.com", "http://127.0.0.1:11434"],
)
def test_url_is_the_base_url_plus_the_endpoint_path(kind: str, wire: Wire, base_url: str) -> None:
    adapter = ADAPTERS[kind](settings_for(kind, base_url=base_url))
    assert adapter.url == base_url + wire.path


def test_auth_header_is_sent_when_a_key_is_set(adapter: Adapter, wire: Wire) -> None:
    assert wire.auth(API_KEY).items() <= adapter.headers.items()


@pytest.mark.parametrize("key", [None, ""])
def test_no_auth_header_is_sent_without_a_key(kind: str, wire: Wire, key: str | None) -> None:
    adapter = ADAPTERS[kind](settings_for(kind, api_key=key))
    sent = {name.lower() for name in adapter.headers}
    assert not sent & {name.lower() for name in wire.auth(API_KEY) if name != "anthropic-version"}
    assert API_KEY not in adapter.headers.values()


def test_headers_declare_a_json_body(adapter: Adapter) -> None:
    assert adapter.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("stream", [True, False])
def test_map_request_is_json_with_model_messages_and_stream_flag(
    adapter: Adapter, wire: Wire, stream: bool
) -> None:
    body = json.loads(adapter.map_request(request_of(), "chosen-model", stream=stream))
    assert body["model"] == "chosen-model"
    assert wire.conversation(body) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello — 🙂"},
    ]
    assert body["stream"] is stream


@pytest.mark.parametrize("stop", ["END", ["END", "\n\n"]])
def test_map_request_honours_sampling_options_in_the_provider_names(
    adapter: Adapter, wire: Wire, stop: str | list[str]
) -> None:
    request = request_of(max_tokens=64, temperature=0.25, top_p=0.5, stop=stop)
    options = wire.options(json.loads(adapter.map_request(request, "m", stream=False)))
    assert options["max_tokens"] == 64
    assert options["temperature"] == 0.25
    assert options["top_p"] == 0.5
    # A single stop string may be sent as-is or as a one-element list.
    assert as_list(options["stop"]) == as_list(stop)


def test_map_request_leaves_unset_options_out(adapter: Adapter, wire: Wire) -> None:
    options = wire.options(json.loads(adapter.map_request(request_of(), "m", stream=True)))
    assert options == {
        "max_tokens": wire.default_max_tokens,
        "temperature": None,
        "top_p": None,
        "stop": None,
    }


def test_map_request_keeps_a_zero_temperature(adapter: Adapter, wire: Wire) -> None:
    request = request_of(temperature=0.0)
    options = wire.options(json.loads(adapter.map_request(request, "m", stream=False)))
    assert options["temperature"] == 0.0


def test_map_response_returns_text_and_usage(adapter: Adapter, wire: Wire) -> None:
    completion = adapter.map_response(wire.response(TEXT, USAGE))
    assert completion.text == TEXT
    assert completion.usage == USAGE
    assert completion.finish_reason == "stop"


def test_map_response_accepts_an_empty_answer(adapter: Adapter, wire: Wire) -> None:
    completion = adapter.map_response(wire.response("", Usage(3, 0)))
    assert completion.text == ""
    assert completion.usage == Usage(3, 0)


@pytest.mark.parametrize("step", [1, 3, 7, None], ids=["every-1", "every-3", "every-7", "whole"])
def test_stream_yields_the_whole_text_then_usage_then_done(
    adapter: Adapter, wire: Wire, step: int | None
) -> None:
    data = wire.frame(wire.payloads(PIECES, USAGE))
    events = run_stream(adapter, data, step)
    assert text_of(events) == TEXT == adapter.map_response(wire.response(TEXT, USAGE)).text
    assert merged_usage(events) == USAGE
    assert isinstance(events[-1], Done)
    assert sum(isinstance(event, Done) for event in events) == 1
    assert all(events.index(usage) < len(events) - 1 for usage in usage_of(events))


def test_stream_keeps_the_order_of_its_pieces(adapter: Adapter, wire: Wire) -> None:
    events = run_stream(adapter, wire.frame(wire.payloads(PIECES, USAGE)))
    assert [event.text for event in events if isinstance(event, Chunk)] == PIECES


def test_stream_with_crlf_line_ends_yields_the_same_events(adapter: Adapter, wire: Wire) -> None:
    data = wire.frame(wire.payloads(PIECES, USAGE))
    assert run_stream(adapter, data.replace(b"\n", b"\r\n"), 5) == run_stream(adapter, data)


def test_stream_whose_last_line_lacks_its_newline_still_ends_with_done(
    adapter: Adapter, wire: Wire
) -> None:
    data = wire.frame(wire.payloads(PIECES, USAGE)).rstrip(b"\n")
    events = run_stream(adapter, data, 4)
    assert text_of(events) == TEXT
    assert isinstance(events[-1], Done)


@pytest.mark.parametrize("step", [1, 3, 7, None], ids=["every-1", "every-3", "every-7", "whole"])
def test_error_inside_the_stream_raises_upstream_failure(
    adapter: Adapter, wire: Wire, step: int | None
) -> None:
    for error, reason in wire.stream_errors("upstream fell over"):
        payloads = [*text_only(adapter, wire.payloads(PIECES[:2], USAGE)), error]
        with pytest.raises(UpstreamFailure) as caught:
            run_stream(adapter, wire.frame(payloads), step)
        assert caught.value.reason == reason, error
        assert reason in ("server_error", "rate_limited")
        assert "upstream fell over" in caught.value.message


def test_error_payload_maps_to_its_reason(adapter: Adapter, wire: Wire) -> None:
    for error, reason in wire.stream_errors("boom"):
        with pytest.raises(UpstreamFailure) as caught:
            adapter.map_chunk(error)
        assert caught.value.reason == reason, error


def test_error_object_in_a_whole_response_raises_upstream_failure(
    adapter: Adapter, wire: Wire
) -> None:
    for error, reason in wire.stream_errors("boom"):
        with pytest.raises(UpstreamFailure) as caught:
            adapter.map_response(error)
        assert caught.value.reason == reason, error


def test_malformed_stream_payload_is_a_bad_response(adapter: Adapter, wire: Wire) -> None:
    for payload in wire.malformed():
        with pytest.raises(UpstreamFailure) as caught:
            adapter.map_chunk(payload)
        assert caught.value.reason == "bad_response", payload


def test_malformed_response_body_is_a_bad_response(adapter: Adapter, wire: Wire) -> None:
    for body in wire.malformed():
        with pytest.raises(UpstreamFailure) as caught:
            adapter.map_response(body)
        assert caught.value.reason == "bad_response", body


def test_response_without_an_answer_is_a_bad_response(adapter: Adapter) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        adapter.map_response(b"{}")
    assert caught.value.reason == "bad_response"


def test_malformed_line_in_the_middle_of_a_stream_is_a_bad_response(
    adapter: Adapter, wire: Wire
) -> None:
    payloads = wire.payloads(PIECES, USAGE)
    payloads.insert(2, b'{"truncated": ')
    with pytest.raises(UpstreamFailure) as caught:
        run_stream(adapter, wire.frame(payloads), 3)
    assert caught.value.reason == "bad_response"


def test_invalid_utf8_inside_a_json_string_is_a_bad_response(adapter: Adapter, wire: Wire) -> None:
    chunk = next(p for p in wire.payloads(["MARK"], USAGE) if b"MARK" in p)
    whole = wire.response("MARK", USAGE)
    for mapper, sample in ((adapter.map_chunk, chunk), (adapter.map_response, whole)):
        with pytest.raises(UpstreamFailure) as caught:
            mapper(sample.replace(b"MARK", b"\xff\xfe"))
        assert caught.value.reason == "bad_response"


def test_error_message_extracts_the_message_from_the_error_body(
    adapter: Adapter, wire: Wire
) -> None:
    assert adapter.error_message(wire.error_body("model 'x' not found")) == "model 'x' not found"


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"  upstream timed out\n", b'{"detail": "nope"}'],
)
def test_error_message_falls_back_to_the_raw_text(adapter: Adapter, body: bytes) -> None:
    assert adapter.error_message(body) == body.decode().strip()


def test_error_message_of_an_empty_body_is_empty(adapter: Adapter) -> None:
    assert adapter.error_message(b"") == ""


def test_error_message_of_a_long_raw_body_is_truncated(adapter: Adapter) -> None:
    message = adapter.error_message(b"x" * 10_000)
    assert 0 < len(message) <= 500


def test_error_message_of_non_utf8_raw_text_is_still_text(adapter: Adapter) -> None:
    message = adapter.error_message(b"bad \xff\xfe gateway")
    assert message.startswith("bad ")
    assert message.endswith(" gateway")


def test_error_message_of_a_json_body_with_invalid_utf8_is_still_text(
    adapter: Adapter, wire: Wire
) -> None:
    body = wire.error_body("MARK").replace(b"MARK", b"bad \xff")
    assert isinstance(adapter.error_message(body), str)


# --- Per-adapter details -----------------------------------------------------------------------


def openai() -> Adapter:
    return ADAPTERS["openai"](settings_for("openai"))


def ollama() -> Adapter:
    return ADAPTERS["ollama"](settings_for("ollama"))


def test_openai_stream_request_asks_for_usage() -> None:
    body = json.loads(openai().map_request(request_of(), "m", stream=True))
    assert body["stream_options"] == {"include_usage": True}


def test_openai_whole_request_does_not_ask_for_stream_options() -> None:
    body = json.loads(openai().map_request(request_of(), "m", stream=False))
    assert "stream_options" not in body


def test_openai_done_marker_ends_the_stream() -> None:
    assert openai().map_chunk(b"[DONE]") == [Done()]


def test_openai_error_message_accepts_a_plain_string_error() -> None:
    assert openai().error_message(b'{"error": "quota exhausted"}') == "quota exhausted"


def test_openai_response_without_usage_has_zero_usage() -> None:
    body = _json({"choices": [{"message": {"content": "hi"}, "finish_reason": "length"}]})
    completion = openai().map_response(body)
    assert completion == completion.__class__("hi", Usage(), "length")


def test_openai_groq_shaped_rate_limit_error_in_stream_is_rate_limited() -> None:
    error = {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}
    payload = _json({"error": error})
    with pytest.raises(UpstreamFailure) as caught:
        openai().map_chunk(payload)
    assert caught.value.reason == "rate_limited"


def test_openai_plain_string_error_in_stream_is_a_server_error() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        openai().map_chunk(b'{"error": "model overloaded"}')
    assert caught.value.reason == "server_error"
    assert "model overloaded" in caught.value.message


def test_ollama_sends_max_tokens_as_num_predict_in_options() -> None:
    body = json.loads(ollama().map_request(request_of(max_tokens=9), "m", stream=False))
    assert body["options"] == {"num_predict": 9}
    assert "max_tokens" not in body


def test_ollama_wraps_a_single_stop_string_in_a_list() -> None:
    body = json.loads(ollama().map_request(request_of(stop="END"), "m", stream=False))
    assert body["options"]["stop"] == ["END"]


def test_ollama_request_without_options_has_no_options_object() -> None:
    body = json.loads(ollama().map_request(request_of(), "m", stream=False))
    assert "options" not in body


def test_ollama_done_line_carries_its_done_reason() -> None:
    events = ollama().map_chunk(
        _json({"message": {"content": ""}, "done": True, "done_reason": "length", "eval_count": 2})
    )
    assert events == [Usage(0, 2), Done("length")]


def test_ollama_error_body_without_an_error_falls_back_to_raw_text() -> None:
    assert ollama().error_message(b'{"done": false}') == '{"done": false}'


# --- classify_status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "rate_limited"),
        (401, "auth_error"),
        (403, "auth_error"),
        (400, None),
        (404, None),
        (413, None),
        (422, None),
        (408, "timeout"),
        (504, "timeout"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (529, "server_error"),
        (418, "bad_response"),
    ],
)
def test_classify_status_maps_each_status_to_its_reason(status: int, reason: str | None) -> None:
    failure = classify_status(status, "upstream said no", None)
    assert isinstance(failure, UpstreamFailure)
    assert failure.reason == reason
    assert failure.status == status
    assert failure.message == f"HTTP {status}: upstream said no"


def test_classify_status_keeps_retry_after_of_a_429() -> None:
    failure = classify_status(429, "slow down", 12.5)
    assert failure.reason == "rate_limited"
    assert failure.retry_after == 12.5


@pytest.mark.parametrize("status", [502, 503, 529])
def test_classify_status_keeps_retry_after_of_a_server_error(status: int) -> None:
    assert classify_status(status, "", 7.0).retry_after == 7.0


@pytest.mark.parametrize("status", [401, 403, 400, 422])
def test_classify_status_drops_retry_after_where_it_means_nothing(status: int) -> None:
    assert classify_status(status, "", 7.0).retry_after is None


def test_classify_status_without_a_message_names_only_the_status() -> None:
    assert classify_status(503, "", None).message == "HTTP 503"


# --- parse_retry_after -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), (" 5 ", 5.0), ("0", 0.0)])
def test_parse_retry_after_reads_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_reads_a_future_http_date() -> None:
    value = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 25.0 <= seconds <= 31.0


def test_parse_retry_after_measures_an_http_date_from_the_given_now() -> None:
    now = 1_700_000_000.0
    value = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(value, now=now) == pytest.approx(30.0)


def test_parse_retry_after_of_a_past_date_is_zero() -> None:
    assert parse_retry_after(email.utils.formatdate(time.time() - 3600, usegmt=True)) == 0.0


@pytest.mark.parametrize("value", ["soon", "Wed, 99 Foo 2015 07:28:00 GMT", "1,5", "12abc"])
def test_parse_retry_after_of_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["", None])
def test_parse_retry_after_of_nothing_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "1e400"])
def test_parse_retry_after_of_non_finite_numbers_is_none(value: str) -> None:
    assert parse_retry_after(value) is None


# --- Capabilities and tool calls ---------------------------------------------------------------

FEATURE_VALUES: dict[str, Any] = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "response_format": {"type": "json_object"},
    "seed": 7,
    "n": 2,
    "user": "user-1",
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
}


def test_feature_samples_cover_every_feature() -> None:
    assert set(FEATURE_VALUES) == set(FEATURES)


def test_capabilities_are_named_features(adapter: Adapter) -> None:
    assert adapter.capabilities <= set(FEATURES)


def test_every_claimed_capability_changes_the_upstream_body(adapter: Adapter) -> None:
    plain = json.loads(adapter.map_request(request_of(), "m", stream=False))
    for feature in adapter.capabilities:
        request = request_of(**{feature: FEATURE_VALUES[feature]})
        assert json.loads(adapter.map_request(request, "m", stream=False)) != plain, feature


def test_unsupported_lists_the_requested_features_not_claimed(adapter: Adapter) -> None:
    wanted = requested_features(request_of(**FEATURE_VALUES))
    assert wanted == list(FEATURES)
    assert adapter.unsupported(wanted) == [f for f in FEATURES if f not in adapter.capabilities]


def test_requested_features_ignore_defaults_and_count_tool_turns() -> None:
    assert requested_features(request_of(n=1, response_format={"type": "text"})) == []
    call = {"id": "c1", "function": {"name": "f", "arguments": "{}"}}
    turns = [{"role": "assistant", "content": "", "tool_calls": [call]}]
    assert requested_features(request_of(messages=turns)) == ["tools"]
    tool_turn = [{"role": "tool", "content": "42", "tool_call_id": "c1"}]
    assert requested_features(request_of(messages=tool_turn, seed=1)) == ["tools", "seed"]


def test_openai_streams_tool_call_pieces_and_the_finish_reason() -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": ""}
    payloads = [
        _openai_delta({"role": "assistant", "content": None, "tool_calls": [call]}),
        _openai_delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _openai_delta({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _openai_delta({}, finish_reason="tool_calls"),
        b"[DONE]",
    ]
    assert run_stream(openai(), _sse(payloads)) == [
        ToolCallDelta(0, "call_1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"a":'),
        ToolCallDelta(0, None, None, " 1}"),
        Finish("tool_calls"),
        Done(),
    ]


def test_openai_whole_response_carries_its_tool_calls() -> None:
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"x": 1}'}},
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    body = _json({"choices": [{"message": message, "finish_reason": "tool_calls"}]})
    completion = openai().map_response(body)
    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [
        ToolCallDelta(0, "a", "f", "{}"),
        ToolCallDelta(1, "b", "g", '{"x": 1}'),
    ]


def anthropic() -> Adapter:
    return ADAPTERS["anthropic"](settings_for("anthropic"))


def test_anthropic_streams_tool_use_after_text_with_its_block_index() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    piece = {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
    payloads = [
        _anthropic_delta("Let me look."),
        _json({"type": "content_block_start", "index": 1, "content_block": tool}),
        _json({"type": "content_block_delta", "index": 1, "delta": piece}),
        _json({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}}),
        _json({"type": "message_stop"}),
    ]
    assert run_stream(anthropic(), _named_sse(payloads)) == [
        Chunk("Let me look."),
        ToolCallDelta(1, "toolu_1", "get_weather", ""),
        ToolCallDelta(1, None, None, '{"city": "Paris"}'),
        Finish("tool_calls"),
        Usage(0, 0),
        Done(),
    ]


def test_anthropic_whole_response_maps_tool_use_and_stop_reason() -> None:
    content = [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "é"}},
    ]
    completion = anthropic().map_response(_anthropic_message(content, USAGE, "tool_use"))
    assert completion.text == "Checking."
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [ToolCallDelta(0, "toolu_1", "f", '{"q":"é"}')]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_anthropic_stop_reasons_become_openai_finish_reasons(stop: str, finish: str) -> None:
    completion = anthropic().map_response(_anthropic_message([], USAGE, stop))
    assert completion.finish_reason == finish
    delta = _json({"type": "message_delta", "delta": {"stop_reason": stop}})
    assert anthropic().map_chunk(delta) == [Finish(finish)]


def test_anthropic_prompt_tokens_include_cached_input() -> None:
    usage = {"input_tokens": 5, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 20}
    start = _json({"type": "message_start", "message": {"content": [], "usage": usage}})
    assert anthropic().map_chunk(start) == [Usage(35, 0)]


def test_anthropic_ignores_pings_and_event_kinds_it_does_not_know() -> None:
    adapter = anthropic()
    for payload in (b'{"type": "ping"}', b'{"type": "content_block_stop", "index": 0}'):
        assert adapter.map_chunk(payload) == []
    assert adapter.map_chunk(b'{"type": "something_new", "data": [1]}') == []
    thinking = {"type": "thinking_delta", "thinking": "hmm"}
    assert adapter.map_chunk(_json({"type": "content_block_delta", "delta": thinking})) == []


def test_anthropic_error_event_without_details_is_a_server_error() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        anthropic().map_chunk(b'{"type": "error"}')
    assert caught.value.reason == "server_error"


def test_anthropic_request_joins_system_messages_and_maps_tool_options() -> None:
    request = request_of(
        messages=[
            {"role": "system", "content": "one"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "two"},
        ],
        tools=FEATURE_VALUES["tools"],
        tool_choice="required",
        parallel_tool_calls=False,
        user="u-9",
    )
    body = json.loads(anthropic().map_request(request, "claude", stream=False))
    assert body["system"] == "one\n\ntwo"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "u-9"}


@pytest.mark.parametrize(
    ("choice", "parallel", "sent"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    ],
)
def test_anthropic_tool_choice_mapping(choice: Any, parallel: bool | None, sent: Any) -> None:
    request = request_of(
        tools=FEATURE_VALUES["tools"], tool_choice=choice, parallel_tool_calls=parallel
    )
    assert json.loads(anthropic().map_request(request, "m", stream=True))["tool_choice"] == sent


def test_anthropic_tool_without_a_schema_gets_an_empty_object_schema() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "does f"}}]
    body = json.loads(anthropic().map_request(request_of(tools=tools), "m", stream=False))
    assert body["tools"] == [
        {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}}
    ]
