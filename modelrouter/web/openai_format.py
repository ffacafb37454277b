"""Writing answers in OpenAI's formats: `chat.completion`, `chat.completion.chunk`, errors.

Both carry a `provider` field (as OpenRouter's do) and `model` as `provider/model`, the id
that `GET /v1/models` lists and that routes back to the same place.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from modelrouter.actors import Relay
from modelrouter.errors import ApiError, retryable
from modelrouter.events import Chunk, Done, Event, Failed, ToolCallDelta, Usage

_encode = msgspec.json.Encoder().encode
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}
_OPEN_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'  # a chunk that does not finish


def model_id(relay: Relay) -> str:
    return f"{relay.provider}/{relay.model}"


def error_body(status: int, type_: str, message: str, param: str | None) -> dict[str, Any]:
    """OpenAI's error object; our own error type goes in `code`."""
    kind = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    return {"message": message, "type": kind, "param": param, "code": _CODES.get(type_, type_)}


def error_bytes(exc: ApiError) -> bytes:
    return _encode({"error": error_body(exc.status, exc.type, exc.message, exc.param)})


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class ToolCalls:
    """Tool-call pieces keyed by the upstream's index, renumbered 0, 1, ... as they appear
    (an Anthropic index counts text blocks too; OpenAI's clients want the calls' own order)."""

    __slots__ = ("_calls", "_positions")

    def __init__(self) -> None:
        self._positions: dict[int, int] = {}
        self._calls: list[dict[str, Any]] = []

    def delta(self, piece: ToolCallDelta) -> dict[str, Any]:
        """The piece as a streamed `tool_calls` entry."""
        position = self._positions.setdefault(piece.index, len(self._positions))
        out: dict[str, Any] = {"index": position}
        function: dict[str, Any] = {"arguments": piece.arguments}
        if piece.id is not None:
            out |= {"id": piece.id, "type": "function"}
        if piece.name is not None:
            function["name"] = piece.name
        out["function"] = function
        return out

    def add(self, piece: ToolCallDelta) -> None:
        """Gather a piece into the whole calls."""
        position = self._positions.setdefault(piece.index, len(self._positions))
        if position == len(self._calls):
            function = {"name": "", "arguments": ""}
            self._calls.append({"id": "", "type": "function", "function": function})
        call = self._calls[position]
        call["id"] = piece.id or call["id"]
        call["function"]["name"] = piece.name or call["function"]["name"]
        call["function"]["arguments"] += piece.arguments

    def calls(self) -> list[dict[str, Any]]:
        return self._calls


def completion_body(
    relay: Relay,
    *,
    request_id: str,
    text: str,
    tool_calls: list[ToolCallDelta],
    usage: Usage,
    finish_reason: str,
) -> bytes:
    """A whole `chat.completion`."""
    gathered = ToolCalls()
    for piece in tool_calls:
        gathered.add(piece)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if gathered.calls():
        message |= {"content": text or None, "tool_calls": gathered.calls()}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id(relay),
        "provider": relay.provider,
        "choices": [choice],
        "usage": usage_body(usage),
    }
    return _encode(body)


class OpenAIStream:
    """`chat.completion.chunk` events: a role chunk, content or tool-call deltas, a chunk with
    the finish reason, the usage chunk if asked for, then `data: [DONE]`. A failure after the
    first byte is an `event: error` whose data is an OpenAI error object, with no `[DONE]`."""

    __slots__ = ("_base", "_head", "_tool_calls", "_usage", "include_usage", "request_id")

    def __init__(self, request_id: str, *, include_usage: bool) -> None:
        self.request_id = request_id
        self.include_usage = include_usage
        self._tool_calls = ToolCalls()
        self._usage = Usage()
        self._base: dict[str, Any] = {}
        self._head = b""

    def start(self, relay: Relay) -> bytes:
        self._base = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model_id(relay),
            "provider": relay.provider,
        }
        # Every chunk shares this prefix up to its delta; only the delta is encoded per chunk.
        self._head = b"data: " + _encode(self._base)[:-1] + b',"choices":[{"index":0,"delta":'
        return self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        tail = b',"logprobs":null,"finish_reason":' + _encode(finish_reason) + b"}]}\n\n"
        return self._head + _encode(delta) + tail

    def event(self, event: Event) -> bytes:
        kind = type(event)
        if kind is Chunk:
            text = _encode(event.text)  # type: ignore[union-attr]
            return self._head + b'{"content":' + text + b"}" + _OPEN_TAIL
        if kind is ToolCallDelta:
            return self._chunk({"tool_calls": [self._tool_calls.delta(event)]})  # type: ignore[arg-type]
        if kind is Usage:
            self._usage = event  # type: ignore[assignment]
            return b""
        if kind is Done:
            return self._end(event.finish_reason or "stop")  # type: ignore[union-attr]
        if kind is Failed:
            return self._error(event.status, event.type, event.message)  # type: ignore[union-attr]
        return b""

    def _end(self, finish_reason: str) -> bytes:
        out = self._chunk({}, finish_reason)
        if self.include_usage:
            usage = {**self._base, "choices": [], "usage": usage_body(self._usage)}
            out += b"data: " + _encode(usage) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def _error(self, status: int, type_: str, message: str) -> bytes:
        body = error_body(status, type_, message, None)
        body |= {"request_id": self.request_id, "retryable": retryable(status)}
        return b"event: error\ndata: " + _encode({"error": body}) + b"\n\n"

    def error(self, type_: str, message: str) -> bytes:
        return self._error(504, type_, message)
