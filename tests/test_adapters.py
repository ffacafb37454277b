"""One behaviour suite that every provider adapter must pass, plus status and Retry-After rules.

The suite is parametrized over `modelrouter.providers.ADAPTERS`, so an adapter added there is
tested automatically; it only needs an entry in `WIRE` below with sample upstream bytes in its own
wire format (a missing entry fails `test_every_adapter_has_wire_samples`).
"""

from __future__ import annotations

import email.utils
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from modelrouter.actors.health import Health
from modelrouter.config import ProviderSettings
from modelrouter.events import (
    Chunk,
    Done,
    Event,
    Finish,
    Thinking,
    ToolCallDelta,
    UpstreamFailure,
    Usage,
)
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
# Every kind at once: 120 prompt tokens of which 80 read from a cache and 10 written to it, 45
# completion tokens of which 20 reasoning.
USAGE_KINDS = Usage(120, 45, cached_input=80, cache_write=10, reasoning=20)
KINDS = ("cached_input", "cache_write", "reasoning")
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
            "usage": _openai_usage(usage),
        }
    )


def _openai_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: the totals include the cached and the reasoning tokens, and the details
    say how many (sent only when there are some, as most servers do)."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_input:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_input, "audio_tokens": 0}
    if usage.reasoning:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return body


def _openai_delta(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return _json({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]})


def _openai_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    usage_chunk = _json(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": _openai_usage(usage),
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
            "usage": _anthropic_usage(usage),
        }
    )


def _anthropic_usage(usage: Usage) -> dict[str, Any]:
    """Anthropic's usage: `input_tokens` excludes the cache's reads and writes."""
    body: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens - usage.cached_input - usage.cache_write,
        "output_tokens": usage.completion_tokens,
    }
    if usage.cached_input or usage.cache_write:
        body["cache_read_input_tokens"] = usage.cached_input
        body["cache_creation_input_tokens"] = usage.cache_write
    return body


def _anthropic_response(text: str, usage: Usage) -> bytes:
    return _anthropic_message([{"type": "text", "text": text}], usage, "end_turn")


def _anthropic_delta(piece: str) -> bytes:
    delta = {"type": "text_delta", "text": piece}
    return _json({"type": "content_block_delta", "index": 0, "delta": delta})


def _anthropic_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    opening = msgspec.structs.replace(usage, completion_tokens=1, reasoning=0)
    start = json.loads(_anthropic_message([], opening, None))
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


# --- Tool calls, finish reasons, missing models: each as the provider documents it -------------
# OpenAI: https://platform.openai.com/docs/api-reference/chat/object (tool_calls with JSON text
# arguments, streamed as pieces keyed by index). Anthropic:
# https://docs.anthropic.com/en/docs/build-with-claude/streaming (tool_use blocks, input as
# input_json_delta pieces). Ollama: https://github.com/ollama/ollama/blob/main/docs/api.md and
# https://ollama.com/blog/streaming-tool (arguments an object, no id, a call whole in one line).

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_weather", {"city": "Paris"}),
    ("get_time", {"zone": "Europe/Paris", "h24": True}),
]


def _openai_tool_response(calls: list[tuple[str, dict[str, Any]]]) -> bytes:
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": _text(a)}}
        for i, (n, a) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
    return _json({"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]})


def _openai_tool_payloads(calls: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    out: list[bytes] = []
    for i, (name, arguments) in enumerate(calls):
        call = {"index": i, "id": f"call_{i}", "type": "function"}
        call["function"] = {"name": name, "arguments": ""}
        first = {"tool_calls": [call]}
        out.append(
            _openai_delta({"role": "assistant", "content": None, **first} if not i else first)
        )
        text = _text(arguments)
        out += [
            _openai_delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            for piece in (text[:5], text[5:])
        ]
    return [*out, _openai_delta({}, finish_reason="tool_calls"), b"[DONE]"]


def _openai_tool_turns(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        for call in message.get("tool_calls", ()):
            function = call["function"]
            assert isinstance(function["arguments"], str), "OpenAI's arguments are JSON text"
            turns.append(("call", function["name"], json.loads(function["arguments"])))
        if message["role"] == "tool":
            turns.append(("result", message["content"]))
    return turns


def _openai_finish(reason: str) -> tuple[bytes, list[bytes]]:
    message = {"role": "assistant", "content": "x"}
    whole = _json({"choices": [{"index": 0, "message": message, "finish_reason": reason}]})
    stream = [_openai_delta({"content": "x"}), _openai_delta({}, finish_reason=reason), b"[DONE]"]
    return whole, stream


def _anthropic_tool_response(calls: list[tuple[str, dict[str, Any]]]) -> bytes:
    blocks = [
        {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
        for i, (n, a) in enumerate(calls)
    ]
    return _anthropic_message(blocks, USAGE, "tool_use")


def _anthropic_tool_payloads(calls: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    out = [
        _json({"type": "message_start", "message": json.loads(_anthropic_message([], USAGE, None))})
    ]
    for i, (name, arguments) in enumerate(calls):
        block = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
        out.append(_json({"type": "content_block_start", "index": i, "content_block": block}))
        text = _text(arguments)
        for piece in (text[:5], text[5:]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(_json({"type": "content_block_delta", "index": i, "delta": delta}))
        out.append(_json({"type": "content_block_stop", "index": i}))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use"},
        "usage": {"output_tokens": 9},
    }
    return [*out, _json(end), _json({"type": "message_stop"})]


def _anthropic_tool_turns(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block["type"] == "tool_use":
                turns.append(("call", block["name"], block["input"]))
            elif block["type"] == "tool_result":
                turns.append(("result", block["content"]))
    return turns


def _anthropic_finish(reason: str) -> tuple[bytes, list[bytes]]:
    whole = _anthropic_message([{"type": "text", "text": "x"}], USAGE, reason)
    end = {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 1}}
    return whole, [_anthropic_delta("x"), _json(end), _json({"type": "message_stop"})]


def _ollama_line(message: dict[str, Any], **end: Any) -> bytes:
    line = {"model": "qwen3", "created_at": "2025-05-27T22:54:58.100509Z", "message": message}
    return _json({**line, "done": bool(end), **end})


def _ollama_end(reason: str = "stop") -> dict[str, Any]:
    return {"done_reason": reason, "prompt_eval_count": 11, "eval_count": 7}


def _ollama_call(i: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "arguments": arguments}
    if i:  # newer versions number the calls, leaving out a 0
        function["index"] = i
    return {"function": function}


def _ollama_tool_response(calls: list[tuple[str, dict[str, Any]]]) -> bytes:
    tool_calls = [_ollama_call(i, n, a) for i, (n, a) in enumerate(calls)]
    message = {"role": "assistant", "content": "", "tool_calls": tool_calls}
    return _ollama_line(message, **_ollama_end())


def _ollama_tool_payloads(calls: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    lines = [
        _ollama_line({"role": "assistant", "content": "", "tool_calls": [_ollama_call(i, n, a)]})
        for i, (n, a) in enumerate(calls)
    ]
    return [*lines, _ollama_line({"role": "assistant", "content": ""}, **_ollama_end())]


def _ollama_tool_turns(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        for call in message.get("tool_calls", ()):
            function = call["function"]
            assert isinstance(function["arguments"], dict), "Ollama's arguments are an object"
            turns.append(("call", function["name"], function["arguments"]))
        if message["role"] == "tool":
            turns.append(("result", message["content"]))
    return turns


def _ollama_finish(reason: str) -> tuple[bytes, list[bytes]]:
    message = {"role": "assistant", "content": "x"}
    whole = _ollama_line(message, **_ollama_end(reason))
    end = _ollama_line({"role": "assistant", "content": ""}, **_ollama_end(reason))
    return whole, [_ollama_line(message), end]


def _text(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments)


# --- Azure OpenAI: OpenAI's body and stream, Azure's filter annotations and error codes ---------
# https://learn.microsoft.com/en-us/azure/ai-services/openai/reference and
# https://learn.microsoft.com/en-us/azure/ai-services/openai/concepts/content-filter: a stream
# opens with a chunk of prompt filter results and no choices; choices carry filter results.

_AZURE_FILTERS = {"hate": {"filtered": False, "severity": "safe"}}


def _azure_response(text: str, usage: Usage) -> bytes:
    body = json.loads(_openai_response(text, usage))
    body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _AZURE_FILTERS}]
    body["choices"][0]["content_filter_results"] = _AZURE_FILTERS
    return _json(body)


def _azure_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    prompt = {"prompt_index": 0, "content_filter_results": _AZURE_FILTERS}
    first = _json({"id": "", "object": "", "choices": [], "prompt_filter_results": [prompt]})
    return [first, *_openai_payloads(pieces, usage)]


def _azure_error(code: str, message: str) -> bytes:
    return _json({"error": {"code": code, "message": message}})


# --- Gemini generateContent / streamGenerateContent?alt=sse ------------------------------------
# https://ai.google.dev/api/generate-content: a stream is GenerateContentResponse chunks, the
# last with the candidate's finishReason; calls come whole in functionCall parts.

SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1jYWxs+/8="  # base64 with the characters URLs change


def _gemini_usage(usage: Usage) -> dict[str, int]:
    """Gemini's usage: `promptTokenCount` includes `cachedContentTokenCount`; thoughts are
    counted apart from the candidates."""
    body = {
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens - usage.reasoning,
        "totalTokenCount": usage.total_tokens,
    }
    if usage.cached_input:
        body["cachedContentTokenCount"] = usage.cached_input
    if usage.reasoning:
        body["thoughtsTokenCount"] = usage.reasoning
    return body


def _gemini_chunk(
    parts: list[dict[str, Any]], finish: str | None = None, usage: Usage | None = None
) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "responseId": "resp-1"}
    if usage is not None:
        body["usageMetadata"] = _gemini_usage(usage)
    return _json({**body, "modelVersion": "gemini-2.5-flash"})


def _gemini_response(text: str, usage: Usage) -> bytes:
    return _gemini_chunk([{"text": text}], "STOP", usage)


def _gemini_payloads(pieces: list[str], usage: Usage) -> list[bytes]:
    *first, last = pieces
    return [
        *(_gemini_chunk([{"text": piece}]) for piece in first),
        _gemini_chunk([{"text": last}], "STOP", usage),
    ]


def _gemini_error(code: int, status: str, message: str) -> bytes:
    return _json({"error": {"code": code, "message": message, "status": status}})


def _gemini_options(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("generationConfig", {})
    return {
        "max_tokens": config.get("maxOutputTokens"),
        "temperature": config.get("temperature"),
        "top_p": config.get("topP"),
        "stop": config.get("stopSequences"),
    }


def _gemini_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = body.get("systemInstruction", {"parts": []})["parts"]
    roles = {"user": "user", "model": "assistant"}
    return [
        *({"role": "system", "content": part["text"]} for part in system),
        *(
            {"role": roles[turn["role"]], "content": "".join(p["text"] for p in turn["parts"])}
            for turn in body["contents"]
        ),
    ]


def _gemini_target(adapter: Adapter, body: dict[str, Any], model: str, stream: bool) -> Any:
    """The model and the stream flag as Gemini reads them: from the path, not the body."""
    assert "model" not in body
    assert "stream" not in body
    name, _, method = adapter.path(model, stream=stream).removeprefix("/").partition(":")
    assert method in ("generateContent", "streamGenerateContent?alt=sse")
    return urllib.parse.unquote(name), method.startswith("stream")


def _gemini_call(i: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": arguments}}
    return {**part, "thoughtSignature": SIGNATURE} if i == 0 else part


def _gemini_tool_response(calls: list[tuple[str, dict[str, Any]]]) -> bytes:
    parts = [_gemini_call(i, n, a) for i, (n, a) in enumerate(calls)]
    return _gemini_chunk(parts, "STOP", USAGE)


def _gemini_tool_payloads(calls: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    """Each call in a chunk of its own (the calls are numbered across the stream)."""
    chunks = [_gemini_chunk([_gemini_call(i, n, a)]) for i, (n, a) in enumerate(calls)]
    return [*chunks, _gemini_chunk([{"text": ""}], "STOP", USAGE)]


def _gemini_tool_turns(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns: list[tuple[Any, ...]] = []
    for turn in body["contents"]:
        for part in turn["parts"]:
            if "functionCall" in part:
                turns.append(("call", part["functionCall"]["name"], part["functionCall"]["args"]))
            elif "functionResponse" in part:
                turns.append(("result", part["functionResponse"]["response"]["output"]))
    return turns


def _gemini_finish(reason: str) -> tuple[bytes, list[bytes]]:
    whole = _gemini_chunk([{"text": "x"}], reason, USAGE)
    return whole, [_gemini_chunk([{"text": "x"}]), _gemini_chunk([{"text": ""}], reason, USAGE)]


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
    # The model and the stream flag a mapped request asks for (adapter, body, model, stream).
    target: Callable[[Adapter, dict[str, Any], str, bool], Any] = lambda _a, body, _m, _s: (
        body["model"],
        body["stream"],
    )
    default_max_tokens: int | None = None  # sent when the request sets none
    # Tool calls: a whole answer and a stream calling CALLS; the history's tool turns read back
    # from a mapped request as ("call", name, arguments) and ("result", content).
    tool_response: Callable[[list[tuple[str, dict[str, Any]]]], bytes] = _openai_tool_response
    tool_payloads: Callable[[list[tuple[str, dict[str, Any]]]], list[bytes]] = _openai_tool_payloads
    tool_turns: Callable[[dict[str, Any]], list[tuple[Any, ...]]] = _openai_tool_turns
    tools: Callable[[dict[str, Any]], list[str]] = lambda body: [
        tool["function"]["name"] for tool in body["tools"]
    ]
    # The provider's stop reasons with the OpenAI finish reason each must become; an answer
    # ending with each (whole, and as stream payloads).
    finish_reasons: tuple[tuple[str, str], ...] = ()
    finish: Callable[[str], tuple[bytes, list[bytes]]] = _openai_finish
    # The provider's answer when it lacks the model, and the failure class it must be.
    missing_model: tuple[int, bytes] = (404, b"")
    missing_model_reason: str | None = None
    # How the provider says its account's billing is exhausted (None: it has no billing).
    billing_exhausted: tuple[int, bytes] | None = None
    # The usage kinds, beyond the totals, that the provider counts apart (Usage's names).
    usage_kinds: frozenset[str] = frozenset({"cached_input", "reasoning"})


# OpenAI's answer once the account has no credit left: a 429 that no wait cures.
OPENAI_INSUFFICIENT_QUOTA = _json(
    {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
)

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
            (_json({"error": {"message": message, "type": "insufficient_quota"}}), "auth_error"),
        ],
        malformed=lambda: [
            *GENERIC_MALFORMED,
            b'{"choices": "nope"}',
            b'{"choices": [{"message": {"content": 5}, "delta": {"content": 5}}]}',
            b'{"choices": [{"message": {"content": "x"}, "delta": {"content": "x"}}],'
            b' "usage": {"prompt_tokens": "many"}}',
        ],
        options=_openai_options,
        finish_reasons=(  # OpenAI's own set, relayed as is
            ("stop", "stop"),
            ("length", "length"),
            ("tool_calls", "tool_calls"),
            ("content_filter", "content_filter"),
        ),
        # A cloud provider that lacks a model was asked for a wrong name: the client hears it.
        missing_model=(
            404,
            _json(
                {
                    "error": {
                        "message": "The model `gpt-9` does not exist or you do not have access.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "model_not_found",
                    }
                }
            ),
        ),
        billing_exhausted=(429, OPENAI_INSUFFICIENT_QUOTA),
    ),
    "ollama": Wire(
        path="/api/chat",
        usage_kinds=frozenset(),  # /api/chat counts no cache and no reasoning apart
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
        tool_response=_ollama_tool_response,
        tool_payloads=_ollama_tool_payloads,
        tool_turns=_ollama_tool_turns,
        finish_reasons=(
            ("stop", "stop"),
            ("length", "length"),
            ("load", "stop"),  # answers to empty requests, never sent
            ("unload", "stop"),
            ("something_new", "stop"),
        ),
        finish=_ollama_finish,
        # Ollama lacks a model that was not pulled on that machine: another provider may have it.
        missing_model=(404, _json({"error": 'model "llama3.2" not found, try pulling it first'})),
        missing_model_reason="model_not_found",
    ),
    "anthropic": Wire(
        path="/v1/messages",
        usage_kinds=frozenset({"cached_input", "cache_write"}),  # thinking is output
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
        tool_response=_anthropic_tool_response,
        tool_payloads=_anthropic_tool_payloads,
        tool_turns=_anthropic_tool_turns,
        tools=lambda body: [tool["name"] for tool in body["tools"]],
        finish_reasons=(
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ),
        finish=_anthropic_finish,
        missing_model=(404, _anthropic_error("not_found_error", "model: claude-9")),
        billing_exhausted=(
            402,
            _anthropic_error("billing_error", "There's an issue with your billing."),
        ),
    ),
    "azure": Wire(
        path="/openai/deployments",  # then /{deployment}/chat/completions?api-version=...
        response=_azure_response,
        payloads=_azure_payloads,
        frame=_sse,
        error_body=lambda message: _azure_error("BadRequest", message),
        stream_errors=lambda message: [
            (_json({"error": {"message": message, "type": "server_error"}}), "server_error"),
            (_azure_error("429", message), "rate_limited"),
        ],
        malformed=lambda: [*GENERIC_MALFORMED, b'{"choices": "nope"}'],
        options=_openai_options,
        auth=lambda key: {"api-key": key},
        finish_reasons=(
            ("stop", "stop"),
            ("length", "length"),
            ("tool_calls", "tool_calls"),
            ("content_filter", "content_filter"),
        ),
        # A resource without that deployment: another deployment of the group may have it.
        missing_model=(
            404,
            _azure_error(
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            ),
        ),
        missing_model_reason="model_not_found",
    ),
    "gemini": Wire(
        path="/v1beta/models",  # then /{model}:generateContent or :streamGenerateContent?alt=sse
        response=_gemini_response,
        payloads=_gemini_payloads,
        frame=_sse,
        error_body=lambda message: _gemini_error(400, "INVALID_ARGUMENT", message),
        stream_errors=lambda message: [
            (_gemini_error(500, "INTERNAL", message), "server_error"),
            (_gemini_error(503, "UNAVAILABLE", message), "server_error"),
            (_gemini_error(429, "RESOURCE_EXHAUSTED", message), "rate_limited"),
        ],
        malformed=lambda: [
            *GENERIC_MALFORMED,
            b'{"candidates": "nope"}',
            b'{"candidates": [{"content": {"parts": [{"text": 5}]}}]}',
            b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": []}}]}}]}',
            b'{"candidates": [], "usageMetadata": {"promptTokenCount": "many"}}',
        ],
        options=_gemini_options,
        auth=lambda key: {"x-goog-api-key": key},
        conversation=_gemini_conversation,
        target=_gemini_target,
        tool_response=_gemini_tool_response,
        tool_payloads=_gemini_tool_payloads,
        tool_turns=_gemini_tool_turns,
        tools=lambda body: [
            d["name"] for tool in body["tools"] for d in tool["functionDeclarations"]
        ],
        finish_reasons=(
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("LANGUAGE", "stop"),
            ("OTHER", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("SOMETHING_NEW", "stop"),
        ),
        finish=_gemini_finish,
        # The model list is Google's: a name it lacks is the client's (or config's) mistake.
        missing_model=(
            404,
            _gemini_error(
                404,
                "NOT_FOUND",
                "models/gemini-9 is not found for API version v1beta, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            ),
        ),
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
    """Feed `data` through the adapter's framer in reads of `step` bytes, mapping each payload
    with the adapter's mapper for one stream, as an upstream attempt does."""
    framer = adapter.framer()
    map_chunk = adapter.stream_mapper()
    step = step or max(len(data), 1)
    events: list[Event] = []
    for start in range(0, len(data), step):
        events += [
            e for payload in framer.feed(data[start : start + step]) for e in map_chunk(payload)
        ]
    return events + [event for payload in framer.finish() for event in map_chunk(payload)]


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
    assert wire.target(adapter, body, "chosen-model", stream) == ("chosen-model", stream)
    assert wire.conversation(body) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello — 🙂"},
    ]


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


def kinds_counted(wire: Wire, usage: Usage) -> Usage:
    """`usage` as a provider that counts only `wire.usage_kinds` apart reports it: the other
    kinds are in the totals, at the input or output price."""
    missing = {kind: 0 for kind in KINDS if kind not in wire.usage_kinds}
    return msgspec.structs.replace(usage, **missing)


def test_map_response_keeps_each_usage_kind_apart(adapter: Adapter, wire: Wire) -> None:
    expected = kinds_counted(wire, USAGE_KINDS)
    usage = adapter.map_response(wire.response(TEXT, expected)).usage
    assert usage == expected
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 45)  # the seed's totals
    assert usage.input == 120 - expected.cached_input - expected.cache_write
    assert usage.output == 45 - expected.reasoning


def test_stream_keeps_each_usage_kind_apart(adapter: Adapter, wire: Wire) -> None:
    expected = kinds_counted(wire, USAGE_KINDS)
    events = run_stream(adapter, wire.frame(wire.payloads(PIECES, expected)))
    assert merged_usage(events) == expected


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
        assert reason in ("server_error", "rate_limited", "auth_error")
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
        (402, "auth_error"),
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


@pytest.mark.parametrize("status", [429, 403, 400])
def test_classify_status_calls_exhausted_billing_an_auth_error_without_retry_after(
    status: int,
) -> None:
    failure = classify_status(status, "no credit left", 12.0, billing_exhausted=True)
    assert (failure.reason, failure.status, failure.retry_after) == ("auth_error", status, None)


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
    """A capability is honoured, not swallowed: each accepted value reaches the body, unless
    it is what the provider does anyway."""
    for feature in adapter.capabilities:
        extra = {"tools": FEATURE_VALUES["tools"]} if feature in TOOL_OPTIONS else {}
        plain = json.loads(adapter.map_request(request_of(**extra), "m", stream=False))
        accepted = 0
        for value in (FEATURE_VALUES[feature], *OTHER_VALUES.get(feature, ())):
            request = request_of(**extra, **{feature: value})
            if adapter.unsupported(request):
                continue
            accepted += 1
            body = json.loads(adapter.map_request(request, "m", stream=False))
            assert body != plain or (feature, value) in PROVIDER_DEFAULTS, (feature, value)
        assert accepted, f"{feature} is claimed but no value of it is accepted"


TOOL_OPTIONS = ("tool_choice", "parallel_tool_calls")
OTHER_VALUES: dict[str, list[Any]] = {
    "tool_choice": ["auto", "none"],
    "parallel_tool_calls": [True],
}
PROVIDER_DEFAULTS = {("tool_choice", "auto"), ("parallel_tool_calls", True)}


def test_unsupported_names_the_requested_features_not_claimed(adapter: Adapter) -> None:
    wanted = requested_features(request_of(**FEATURE_VALUES))
    assert wanted == list(FEATURES)
    refused = [refusal.param for refusal in adapter.unsupported(request_of(**FEATURE_VALUES))]
    for feature in FEATURES:
        if feature not in adapter.capabilities:
            assert feature in refused, feature
    assert set(refused) <= set(FEATURES)


def test_a_plain_request_is_refused_by_no_adapter(adapter: Adapter) -> None:
    assert adapter.unsupported(request_of(max_tokens=9, temperature=0.5, stop="END")) == []


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
    [found] = anthropic().map_chunk(start)
    assert found == Usage(35, 0, cached_input=20, cache_write=10)
    assert found.input == 5


def test_anthropic_ignores_pings_and_event_kinds_it_does_not_know() -> None:
    adapter = anthropic()
    for payload in (b'{"type": "ping"}', b'{"type": "content_block_stop", "index": 0}'):
        assert adapter.map_chunk(payload) == []
    assert adapter.map_chunk(b'{"type": "something_new", "data": [1]}') == []
    citation = {"type": "citations_delta", "citation": {"cited_text": "x"}}
    assert adapter.map_chunk(_json({"type": "content_block_delta", "delta": citation})) == []


def test_anthropic_thinking_blocks_become_thinking_events() -> None:
    adapter = anthropic()
    start = {"type": "thinking", "thinking": "", "signature": ""}
    assert adapter.map_chunk(
        _json({"type": "content_block_start", "index": 0, "content_block": start})
    ) == [Thinking(0)]
    thinking = {"type": "thinking_delta", "thinking": "hmm"}
    assert adapter.map_chunk(
        _json({"type": "content_block_delta", "index": 0, "delta": thinking})
    ) == [Thinking(0, "hmm")]
    signature = {"type": "signature_delta", "signature": "sig"}
    assert adapter.map_chunk(
        _json({"type": "content_block_delta", "index": 0, "delta": signature})
    ) == [Thinking(0, signature="sig")]
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    assert adapter.map_chunk(
        _json({"type": "content_block_start", "index": 1, "content_block": redacted})
    ) == [Thinking(1, redacted="opaque")]
    whole = adapter.map_response(
        _json(
            {
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    redacted,
                    {"type": "text", "text": "hi"},
                ],
                "stop_reason": "end_turn",
            }
        )
    )
    assert whole.thinking == [Thinking(0, "hmm", "sig"), Thinking(1, redacted="opaque")]
    assert whole.text == "hi"


def test_anthropic_error_event_without_details_is_a_server_error() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        anthropic().map_chunk(b'{"type": "error"}')
    assert caught.value.reason == "server_error"


def test_anthropic_request_joins_leading_system_messages_and_maps_tool_options() -> None:
    request = request_of(
        messages=[
            {"role": "system", "content": "one"},
            {"role": "system", "content": "two"},
            {"role": "user", "content": "hi"},
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


# --- Providers' documented rules: wire samples run for every adapter ---------------------------

OPENAI_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}
WEATHER_TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name, _ in CALLS
]
TOOL_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "weather and time in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": f"call_{i}", "function": {"name": name, "arguments": json.dumps(arguments)}}
            for i, (name, arguments) in enumerate(CALLS)
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
]


def gathered_calls(pieces: list[ToolCallDelta]) -> list[tuple[str, str, dict[str, Any]]]:
    """Tool-call pieces put together by index, as an OpenAI client does: (id, name, arguments)."""
    calls: dict[int, list[Any]] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, ["", "", ""])
        call[0] = piece.id or call[0]
        call[1] = piece.name or call[1]
        call[2] += piece.arguments
    return [(i, n, json.loads(a)) for i, n, a in calls.values()]


def finish_of(events: list[Event]) -> str | None:
    """The finish reason as the upstream job keeps it: a Finish event wins over Done's."""
    finish = next((e.reason for e in events if isinstance(e, Finish)), None)
    done = next(e.finish_reason for e in events if isinstance(e, Done))
    return finish or done


def test_a_whole_answer_calling_tools_gives_each_call_with_an_id(
    adapter: Adapter, wire: Wire
) -> None:
    completion = adapter.map_response(wire.tool_response(CALLS))
    calls = gathered_calls(completion.tool_calls)
    assert [(name, arguments) for _, name, arguments in calls] == CALLS
    assert all(call_id for call_id, _, _ in calls)
    assert len({call_id for call_id, _, _ in calls}) == len(CALLS)
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize("step", [1, 7, None], ids=["every-1", "every-7", "whole"])
def test_a_streamed_answer_calling_tools_gives_the_same_calls(
    adapter: Adapter, wire: Wire, step: int | None
) -> None:
    events = run_stream(adapter, wire.frame(wire.tool_payloads(CALLS)), step)
    pieces = [event for event in events if isinstance(event, ToolCallDelta)]
    calls = gathered_calls(pieces)
    assert [(name, arguments) for _, name, arguments in calls] == CALLS
    assert all(call_id for call_id, _, _ in calls)
    assert finish_of(events) == "tool_calls"
    assert isinstance(events[-1], Done)


def test_streamed_and_whole_tool_calls_agree_on_ids(adapter: Adapter, wire: Wire) -> None:
    """An id made by the gateway (Ollama sends none) is the same for the same answer."""
    whole = gathered_calls(adapter.map_response(wire.tool_response(CALLS)).tool_calls)
    again = gathered_calls(adapter.map_response(wire.tool_response(CALLS)).tool_calls)
    assert whole == again


def test_tools_and_tool_turns_are_sent_in_the_provider_s_shape(
    adapter: Adapter, wire: Wire
) -> None:
    request = request_of(messages=TOOL_HISTORY, tools=WEATHER_TOOLS)
    assert adapter.unsupported(request) == []
    body = json.loads(adapter.map_request(request, "m", stream=True))
    assert wire.tools(body) == [name for name, _ in CALLS]
    assert wire.tool_turns(body) == [
        *(("call", name, arguments) for name, arguments in CALLS),
        ("result", "sunny"),
        ("result", "noon"),
    ]


def test_tool_arguments_that_are_not_an_object_are_refused_or_sent_as_text(
    adapter: Adapter, wire: Wire
) -> None:
    """A provider taking arguments as an object cannot send `{oops`: it says so at planning."""
    call = {"id": "c1", "function": {"name": "get_weather", "arguments": "{oops"}}
    history = [TOOL_HISTORY[0], {"role": "assistant", "content": "", "tool_calls": [call]}]
    request = request_of(messages=history, tools=WEATHER_TOOLS)
    refused = adapter.unsupported(request)
    if refused:
        assert [r.param for r in refused] == ["messages"]
        assert "JSON object" in str(refused[0])
    else:
        body = json.loads(adapter.map_request(request, "m", stream=False))
        sent = body["messages"][1]["tool_calls"][0]["function"]["arguments"]
        assert sent == "{oops"


def test_every_finish_reason_becomes_one_of_openai_s(adapter: Adapter, wire: Wire) -> None:
    assert wire.finish_reasons, "each wire lists its provider's stop reasons"
    for raw, expected in wire.finish_reasons:
        assert expected in OPENAI_FINISH_REASONS
        whole, payloads = wire.finish(raw)
        assert adapter.map_response(whole).finish_reason == expected, raw
        assert finish_of(run_stream(adapter, wire.frame(payloads))) == expected, raw


def test_a_missing_model_is_classified_as_the_provider_documents_it(
    adapter: Adapter, wire: Wire
) -> None:
    status, body = wire.missing_model
    failure = adapter.failure(status, body, None)
    assert failure.reason == wire.missing_model_reason
    assert failure.status == status
    assert adapter.error_message(body) in failure.message  # the upstream's own words


@pytest.mark.parametrize(
    "billed", sorted(kind for kind, wire in WIRE.items() if wire.billing_exhausted is not None)
)
def test_exhausted_billing_is_an_auth_error_and_keeps_the_provider_out_the_longest(
    billed: str,
) -> None:
    """Only the kinds whose wire samples carry a billing error (Ollama bills nothing)."""
    adapter, wire = ADAPTERS[billed](settings_for(billed)), WIRE[billed]
    assert wire.billing_exhausted is not None
    status, body = wire.billing_exhausted
    failure = adapter.failure(status, body, 2.0)
    assert (failure.reason, failure.status, failure.retry_after) == ("auth_error", status, None)
    assert adapter.error_message(body) in failure.message
    # The health rules: the maximum blacklist, where a rate limit's is the short backoff.
    limited = adapter.failure(429, wire.error_body("slow down"), 2.0)
    assert limited.reason == "rate_limited"
    out = Health().fail(failure.reason, 0.0, base=5, maximum=300, retry_after=failure.retry_after)
    short = Health().fail(limited.reason, 0.0, base=5, maximum=300, retry_after=2.0)
    assert (out, short) == (300.0, pytest.approx(5.0, rel=0.1))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, {"message": "You exceeded your current quota", "type": "insufficient_quota"}),
        (429, {"message": "quota", "type": "insufficient_quota", "code": None}),
        (429, {"message": "no credit", "type": None, "code": "insufficient_quota"}),
        (
            429,
            {
                "message": "no credit",
                "type": "insufficient_quota",
                "code": "credit_balance_exhausted",
            },
        ),
        (429, {"message": "spend limit", "code": "project_spend_limit_exceeded"}),
        (402, {"message": "Insufficient credits. Add more credits", "code": 402}),  # OpenRouter
    ],
)
def test_openai_compatible_billing_exhaustion_in_each_known_shape_is_an_auth_error(
    status: int, error: dict[str, Any]
) -> None:
    adapter = ADAPTERS["openai"](settings_for("openai"))
    failure = adapter.failure(status, _json({"error": error}), 1.0)
    assert failure.reason == "auth_error"


@pytest.mark.parametrize(
    "error",
    [
        {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "code": "rate_limit_exceeded",
        },
        {"message": "Rate limit reached for tokens", "type": "tokens", "code": None},
        {"message": "quota exceeded", "code": 429},  # prose is no proof: still a rate limit
    ],
)
def test_an_openai_compatible_rate_limit_stays_a_rate_limit_with_its_retry_after(
    error: dict[str, Any],
) -> None:
    adapter = ADAPTERS["openai"](settings_for("openai"))
    failure = adapter.failure(429, _json({"error": error}), 1.5)
    assert (failure.reason, failure.retry_after) == ("rate_limited", 1.5)


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_other_statuses_keep_the_common_classes(adapter: Adapter, wire: Wire, status: int) -> None:
    failure = adapter.failure(status, wire.error_body("no"), 3.0)
    expected = classify_status(status, adapter.error_message(wire.error_body("no")), 3.0)
    assert (failure.reason, failure.status, failure.retry_after) == (
        expected.reason,
        expected.status,
        expected.retry_after,
    )


SAMPLING = [
    (0.0, None),
    (0.7, None),
    (1.0, None),
    (1.5, None),
    (2.0, None),
    (None, 0.1),
    (None, 1.0),
    (0.5, 0.9),
    (0.5, 1.0),
    (1.0, 0.9),
    (1.5, 0.5),
]
NEUTRAL = {"temperature": 1.0, "top_p": 1.0}


@pytest.mark.parametrize(("temperature", "top_p"), SAMPLING)
def test_sampling_values_are_sent_as_given_or_refused_never_clamped(
    adapter: Adapter, wire: Wire, temperature: float | None, top_p: float | None
) -> None:
    """Across OpenAI's ranges (temperature 0..2, top_p 0..1] a value reaches the provider as
    given, or the adapter refuses it by name; the only value left out is a neutral one (1.0)
    sent alongside the other, which says nothing."""
    request = request_of(temperature=temperature, top_p=top_p)
    refused = {refusal.param for refusal in adapter.unsupported(request)}
    assert refused <= {"temperature", "top_p"}
    options = wire.options(json.loads(adapter.map_request(request, "m", stream=False)))
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is None or name in refused:
            continue
        both = temperature is not None and top_p is not None
        assert options[name] == value or (both and value == NEUTRAL[name]), (name, options)


@pytest.mark.parametrize("stop", [["END"], ["\n"], ["END", "  "]])
def test_stop_sequences_are_sent_as_given_or_refused(
    adapter: Adapter, wire: Wire, stop: list[str]
) -> None:
    request = request_of(stop=stop)
    refused = [refusal.param for refusal in adapter.unsupported(request)]
    if refused:
        assert refused == ["stop"]
        return
    options = wire.options(json.loads(adapter.map_request(request, "m", stream=False)))
    assert as_list(options["stop"]) == stop


def test_a_system_message_mid_conversation_stays_in_place_or_is_refused(
    adapter: Adapter, wire: Wire
) -> None:
    """Never moved silently to the top: kept where it stands, or the provider is skipped."""
    turns = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "answer in French from now on"},
        {"role": "user", "content": "how are you?"},
    ]
    request = request_of(messages=turns)
    refused = adapter.unsupported(request)
    if refused:
        assert [r.param for r in refused] == ["messages"]
        assert "system message" in str(refused[0])
        return
    body = json.loads(adapter.map_request(request, "m", stream=False))
    assert wire.conversation(body) == turns


# --- Anthropic's rules, each from its documentation --------------------------------------------


def anthropic_body(**fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        anthropic().map_request(request_of(**fields), "m", stream=False)
    )
    return result


def refused_by_anthropic(**fields: Any) -> list[str]:
    return [str(refusal) for refusal in anthropic().unsupported(request_of(**fields))]


@pytest.mark.parametrize("temperature", [1.01, 1.5, 2.0])
def test_anthropic_refuses_a_temperature_above_one(temperature: float) -> None:
    assert refused_by_anthropic(temperature=temperature) == [
        "temperature (above 1, Anthropic's maximum)"
    ]


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_anthropic_sends_a_temperature_up_to_one_as_given(temperature: float) -> None:
    assert refused_by_anthropic(temperature=temperature) == []
    assert anthropic_body(temperature=temperature)["temperature"] == temperature


def test_anthropic_refuses_temperature_and_top_p_together() -> None:
    assert refused_by_anthropic(temperature=0.3, top_p=0.9) == [
        "top_p (together with temperature; Anthropic takes one)"
    ]


@pytest.mark.parametrize(
    ("temperature", "top_p", "sent"),
    [
        (0.3, 1.0, {"temperature": 0.3}),  # top_p 1.0 keeps every token: it says nothing
        (1.0, 0.9, {"top_p": 0.9}),  # temperature 1.0 is Anthropic's default
        (1.0, 1.0, {"temperature": 1.0}),
        (None, 0.9, {"top_p": 0.9}),
    ],
)
def test_anthropic_sends_one_of_temperature_and_top_p(
    temperature: float | None, top_p: float, sent: dict[str, float]
) -> None:
    assert refused_by_anthropic(temperature=temperature, top_p=top_p) == []
    body = anthropic_body(temperature=temperature, top_p=top_p)
    assert {k: body[k] for k in ("temperature", "top_p") if k in body} == sent


def test_anthropic_leaves_out_an_empty_assistant_turn() -> None:
    turns = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "  \n"},
        {"role": "user", "content": "third"},
    ]
    assert refused_by_anthropic(messages=turns) == []
    assert anthropic_body(messages=turns)["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "user", "content": "third"},
    ]


def test_anthropic_keeps_an_assistant_turn_that_only_called_tools() -> None:
    call = {"id": "toolu_1", "function": {"name": "get_weather", "arguments": "{}"}}
    turns = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": " ", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    body = anthropic_body(messages=turns, tools=WEATHER_TOOLS)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
    }


def test_anthropic_sends_a_final_assistant_turn_as_a_prefill() -> None:
    turns = [{"role": "user", "content": "JSON please"}, {"role": "assistant", "content": "{"}]
    assert refused_by_anthropic(messages=turns) == []
    assert anthropic_body(messages=turns)["messages"][-1] == {"role": "assistant", "content": "{"}
    with_space = [turns[0], {"role": "assistant", "content": "Sure, "}]
    assert refused_by_anthropic(messages=with_space) == [
        "messages (a final assistant turn ending in whitespace)"
    ]


def test_anthropic_refuses_a_system_message_after_the_conversation_started() -> None:
    turns = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "now in French"},
    ]
    assert refused_by_anthropic(messages=turns) == [
        "messages (a system message after the conversation started)"
    ]
    body = anthropic_body(messages=turns)  # what it would send: in place, never hoisted
    assert body["system"] == "be brief"
    assert body["messages"][-1] == {"role": "system", "content": "now in French"}


def test_anthropic_refuses_a_whitespace_stop_sequence() -> None:
    assert refused_by_anthropic(stop=["\n\n"]) == ["stop (a whitespace-only stop sequence)"]
    assert refused_by_anthropic(stop="END") == []


# --- Ollama's rules ----------------------------------------------------------------------------


def test_ollama_sends_tools_in_openai_s_format_with_object_arguments() -> None:
    request = request_of(messages=TOOL_HISTORY, tools=WEATHER_TOOLS, tool_choice="auto")
    body = json.loads(ollama().map_request(request, "llama3.2", stream=True))
    assert body["tools"] == WEATHER_TOOLS
    assert "tool_choice" not in body  # auto is what Ollama does
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in CALLS],
    }
    assert body["messages"][2:] == [
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
    ]


def test_ollama_tool_choice_none_sends_no_tools() -> None:
    request = request_of(tools=WEATHER_TOOLS, tool_choice="none")
    assert ollama().unsupported(request) == []
    assert "tools" not in json.loads(ollama().map_request(request, "m", stream=False))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
)
def test_ollama_refuses_tool_options_it_has_no_way_to_honour(
    fields: dict[str, Any], param: str
) -> None:
    refused = ollama().unsupported(request_of(tools=WEATHER_TOOLS, **fields))
    assert [refusal.param for refusal in refused] == [param]


def test_ollama_tool_call_ids_are_its_own_when_it_sends_them() -> None:
    call = {"id": "call_from_ollama", "function": {"name": "f", "arguments": {"x": 1}}}
    body = _ollama_line({"role": "assistant", "content": "", "tool_calls": [call]}, **_ollama_end())
    (piece,) = ollama().map_response(body).tool_calls
    assert (piece.id, piece.name, json.loads(piece.arguments)) == (
        "call_from_ollama",
        "f",
        {"x": 1},
    )


def test_ollama_made_up_ids_differ_between_answers() -> None:
    first = ollama().map_response(_ollama_tool_response(CALLS[:1])).tool_calls[0].id
    later = _ollama_tool_response(CALLS[:1]).replace(b"58.100509", b"59.000001")
    assert ollama().map_response(later).tool_calls[0].id != first
    assert first is not None
    assert first.startswith("call_")


def test_ollama_text_then_a_tool_call_in_one_stream() -> None:
    payloads = [
        _ollama_line({"role": "assistant", "content": "Let me check."}),
        *_ollama_tool_payloads(CALLS[:1]),
    ]
    events = run_stream(ollama(), _ndjson(payloads))
    assert text_of(events) == "Let me check."
    assert finish_of(events) == "tool_calls"
    assert events[-2:] == [Usage(11, 7), Done("stop")]


@pytest.mark.parametrize(
    ("turns", "why"),
    [
        ([{"role": "user", "content": " "}], "a user message without text"),
        ([{"role": "system", "content": "be brief"}], "system messages only, no turn to answer"),
    ],
)
def test_anthropic_refuses_a_conversation_it_would_answer_with_a_400(
    turns: list[dict[str, Any]], why: str
) -> None:
    assert refused_by_anthropic(messages=turns) == [f"messages ({why})"]
    for adapter in (openai(), ollama()):
        assert adapter.unsupported(request_of(messages=turns)) == []


@pytest.mark.parametrize("kind", ["anthropic", "ollama"])
def test_mapping_arguments_that_are_not_an_object_is_a_client_error(kind: str) -> None:
    """Planning refuses them first; mapped anyway, they are the client's 400, not a guess."""
    call = {"id": "c1", "function": {"name": "f", "arguments": "[1, 2]"}}
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    adapter = ADAPTERS[kind](settings_for(kind))
    with pytest.raises(UpstreamFailure) as caught:
        adapter.map_request(request_of(messages=turns, tools=WEATHER_TOOLS), "m", stream=False)
    assert (caught.value.reason, caught.value.status) == (None, 400)
    assert "messages[1]" in caught.value.message


def test_anthropic_sends_text_before_the_tool_calls_of_one_turn() -> None:
    call = {"id": "toolu_1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    turns = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    assert anthropic_body(messages=turns, tools=WEATHER_TOOLS)["messages"][1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]


def test_openai_usage_details_that_are_null_or_too_large_count_within_their_totals() -> None:
    adapter = openai()
    body = json.loads(_openai_response("x", USAGE))
    body["usage"] |= {"prompt_tokens_details": None, "completion_tokens_details": None}
    assert adapter.map_response(_json(body)).usage == USAGE
    body["usage"] |= {
        "prompt_tokens_details": {"cached_tokens": 50},  # more than prompt_tokens (11)
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    assert adapter.map_response(_json(body)).usage == Usage(11, 7, cached_input=11)
