"""Wire shapes of the provider flavours: OpenAI, Ollama native (Anthropic Messages, Azure and
Gemini in their own modules).

Each flavour turns a reply (a list of tokens) into a JSON body or into pre-encoded
stream bytes. Per-token events are built from a template encoded once per request.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from modelrouter.mock.text import ChatRequest, parse_chat

_encode = msgspec.json.Encoder().encode
_SLOT = "\x00"
_SLOT_JSON = b'"\\u0000"'
_ids = itertools.count(1)

STREAM_ERROR = "mock stream error"


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of the mock: the request, its tokens, and whether they are tool arguments."""

    chat: ChatRequest
    tokens: list[str]
    tool_call: bool = False

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass(frozen=True, slots=True)
class Script:
    """Pre-encoded bytes of one stream: start events, one event per token, end events."""

    head: bytes
    pieces: list[bytes]
    tail: bytes


def _fill(frame: bytes, obj: dict[str, Any], end: bytes, tokens: list[str]) -> list[bytes]:
    """Encode ``obj`` (holding one ``_SLOT`` string, after any client-chosen string) per token."""
    before, _, after = _encode(obj).rpartition(_SLOT_JSON)
    before, after = frame + before, after + end
    return [before + _encode(token) + after for token in tokens]


def _usage(reply: Reply) -> tuple[int, int]:
    return reply.chat.prompt_tokens, len(reply.tokens)


class Flavour(ABC):
    """Body shapes of one provider API."""

    name: ClassVar[str]
    stream_default: ClassVar[bool] = False
    stream_content_type: ClassVar[str] = "text/event-stream"
    supports_tools: ClassVar[bool] = False
    malformed_body: ClassVar[bytes] = b'{"id": "mock-malformed", "choices": [{"message": '
    malformed_line: ClassVar[bytes]

    def parse(self, body: dict[str, Any], target: str = "") -> ChatRequest:  # noqa: ARG002
        """The request's body read as a chat; `target` (path and query, still encoded) matters
        to flavours whose path names the model or the method."""
        return parse_chat(body, stream_default=self.stream_default)

    def retry_headers(self, value: str) -> dict[str, str]:
        """The headers that ask a client to wait, given the `retry_after` fault's value."""
        return {"Retry-After": value}

    @abstractmethod
    def error_body(self, status: int, message: str) -> bytes: ...

    @abstractmethod
    def stream_error(self, message: str) -> bytes: ...

    @abstractmethod
    def complete(self, reply: Reply) -> bytes: ...

    @abstractmethod
    def script(self, reply: Reply) -> Script: ...


def _sse(obj: object) -> bytes:
    return b"data: " + _encode(obj) + b"\n\n"


_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


class OpenAI(Flavour):
    name = "openai"
    supports_tools = True
    malformed_line = b'data: {"id": "mock-malformed", "choices": [\n\n'

    def error_body(self, status: int, message: str) -> bytes:
        kind = _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        error = {"message": message, "type": kind, "code": _OPENAI_CODES.get(status)}
        return _encode({"error": error})

    def stream_error(self, message: str) -> bytes:
        return _sse({"error": {"message": message, "type": "server_error"}})

    def complete(self, reply: Reply) -> bytes:
        prompt, completion = _usage(reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_call:
            message = {"role": "assistant", "content": None, "tool_calls": [_tool(reply, True)]}
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": "tool_calls" if reply.tool_call else "stop",
            "logprobs": None,
        }
        body = {
            **_openai_base(reply, "chat.completion"),
            "choices": [choice],
            "usage": _openai_usage(prompt, completion),
        }
        return _encode(body)

    def script(self, reply: Reply) -> Script:
        base = _openai_base(reply, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        start: dict[str, Any]
        slot: dict[str, Any]
        if reply.tool_call:
            start = {"role": "assistant", "content": None, "tool_calls": [_tool(reply, False)]}
            slot = {"tool_calls": [{"index": 0, "function": {"arguments": _SLOT}}]}
        else:
            start = {"role": "assistant", "content": ""}
            slot = {"content": _SLOT}
        tail = _sse(chunk({}, "tool_calls" if reply.tool_call else "stop"))
        if reply.chat.include_usage:
            tail += _sse({**base, "choices": [], "usage": _openai_usage(*_usage(reply))})
        return Script(
            head=_sse(chunk(start)),
            pieces=_fill(b"data: ", chunk(slot), b"\n\n", reply.tokens),
            tail=tail + b"data: [DONE]\n\n",
        )


def _openai_base(reply: Reply, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-mock-{next(_ids)}",
        "object": kind,
        "created": int(time.time()),
        "model": reply.chat.model,
    }


def _openai_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _tool(reply: Reply, complete: bool) -> dict[str, Any]:
    arguments = reply.text if complete else ""
    function = {"name": reply.chat.tool_name, "arguments": arguments}
    call: dict[str, Any] = {"id": "call_mock_1", "type": "function", "function": function}
    return call if complete else {"index": 0, **call}


class Ollama(Flavour):
    name = "ollama"
    stream_default = True
    stream_content_type = "application/x-ndjson"
    supports_tools = True
    malformed_line = b'{"model": "mock-model", "message": {\n'

    def error_body(self, status: int, message: str) -> bytes:  # noqa: ARG002 - same shape
        return _encode({"error": message})

    def stream_error(self, message: str) -> bytes:
        return _encode({"error": message}) + b"\n"

    def complete(self, reply: Reply) -> bytes:
        return _encode(self._final(reply, "" if reply.tool_call else reply.text))

    def script(self, reply: Reply) -> Script:
        final = self._final(reply, "")
        if reply.tool_call:
            # Ollama streams a tool call whole, in one line, before its end line (which has
            # done_reason "stop"): https://ollama.com/blog/streaming-tool
            line = {
                "model": final["model"],
                "created_at": final["created_at"],
                "message": final["message"],
                "done": False,
            }
            pieces = [_encode(line) + b"\n"]
            final["message"] = {"role": "assistant", "content": ""}
        else:
            slot = {
                "model": final["model"],
                "created_at": final["created_at"],
                "message": {"role": "assistant", "content": _SLOT},
                "done": False,
            }
            pieces = _fill(b"", slot, b"\n", reply.tokens)
        return Script(head=b"", pieces=pieces, tail=_encode(final) + b"\n")

    @staticmethod
    def _message(reply: Reply, content: str) -> dict[str, Any]:
        """The assistant message; a tool call has object arguments and no id, as Ollama's."""
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reply.tool_call:
            arguments = msgspec.json.decode(reply.text)
            message["tool_calls"] = [
                {"function": {"name": reply.chat.tool_name, "arguments": arguments}}
            ]
        return message

    @classmethod
    def _final(cls, reply: Reply, content: str) -> dict[str, Any]:
        prompt, completion = _usage(reply)
        return {
            "model": reply.chat.model,
            "created_at": _ollama_time(),
            "message": cls._message(reply, content),
            "done": True,
            "done_reason": "stop",
            "total_duration": 0,
            "prompt_eval_count": prompt,
            "eval_count": completion,
        }


def _ollama_time() -> str:
    """Now as Ollama writes it, to the microsecond (Ollama's own has nanoseconds)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


OPENAI = OpenAI()
OLLAMA = Ollama()
