"""Writing answers in Anthropic's Messages format: a whole `message`, or its stream of named
events (`message_start`, `ping`, `content_block_start` / `_delta` / `_stop`, `message_delta`
with the stop reason and usage, `message_stop`; `error` when a started stream is cut).

Content blocks come from the relay's events: text (`Chunk`), `tool_use` (`ToolCallDelta`) and
`thinking` / `redacted_thinking` (`Thinking`, from Anthropic deployments only). Finish reasons
are OpenAI's inside the gateway; they map back onto Anthropic's stop reasons (`stop_sequence`,
`pause_turn` and the context window's `max_tokens` come back as `end_turn` / `max_tokens`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from modelrouter.events import Answering, Chunk, Done, Event, Failed, Thinking, ToolCallDelta, Usage
from modelrouter.web.errors import ANTHROPIC_ERRORS
from modelrouter.web.openai_format import model_id
from modelrouter.web.runtime import Summary

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: `input_tokens` without the prompt cache's reads and writes."""
    return {
        "input_tokens": usage.input,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached_input,
    }


def _arguments(text: str) -> Any:
    """A tool call's arguments as the JSON object Anthropic's `input` is ({} if not one)."""
    try:
        value = _decode(text or "{}")
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def thinking_blocks(pieces: list[Thinking]) -> list[dict[str, Any]]:
    """Thinking pieces gathered into whole blocks, in the upstream's order."""
    blocks: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        if piece.redacted is not None:
            blocks[piece.index] = {"type": "redacted_thinking", "data": piece.redacted}
            continue
        block = blocks.setdefault(
            piece.index, {"type": "thinking", "thinking": "", "signature": ""}
        )
        block["thinking"] += piece.text
        block["signature"] += piece.signature
    return [blocks[index] for index in sorted(blocks)]


def tool_use_blocks(pieces: list[ToolCallDelta]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = piece.id or call["id"]
        call["name"] = piece.name or call["name"]
        call["arguments"] += piece.arguments
    return [
        {"type": "tool_use", "id": c["id"], "name": c["name"], "input": _arguments(c["arguments"])}
        for c in calls.values()
    ]


def message_body(
    answering: Answering,
    *,
    request_id: str,
    text: str,
    tool_calls: list[ToolCallDelta],
    thinking: list[Thinking],
    usage: Usage,
    finish_reason: str,
) -> bytes:
    """A whole `message`: thinking blocks, the text, then the tool calls."""
    content = thinking_blocks(thinking)
    if text or not tool_calls:
        content.append({"type": "text", "text": text})
    content += tool_use_blocks(tool_calls)
    body = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model_id(answering),
        "content": content,
        "stop_reason": stop_reason(finish_reason),
        "stop_sequence": None,
        "usage": usage_body(usage),
    }
    return _encode(body)


def _event(name: bytes, body: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + body + b"\n\n"


PING: Final = _event(b"ping", b'{"type":"ping"}')
MESSAGE_STOP: Final = _event(b"message_stop", b'{"type":"message_stop"}')
_TEXT_START: Final = {"type": "text", "text": ""}


class AnthropicStream:
    """One stream's events. A content block opens when a piece of another kind (or another
    call) arrives, and closes when the next opens or the message ends; the blocks are numbered
    0, 1, ... as they open. The usage goes in `message_delta` (the request's final usage and
    cost, read from `summary` where the request's end put it)."""

    __slots__ = ("_blocks", "_open", "_text_head", "_usage", "request_id", "summary")

    def __init__(self, request_id: str, *, summary: Summary | None = None) -> None:
        self.request_id = request_id
        self.summary = summary
        self._blocks = 0  # blocks opened so far
        self._open: tuple[str, int] | None = None  # the open block's kind and upstream index
        self._text_head = b""  # the open text block's delta event, up to the text
        self._usage = Usage()

    def start(self, answering: Answering) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{self.request_id}",
            "type": "message",
            "role": "assistant",
            "model": model_id(answering),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_body(Usage()),
        }
        start = _encode({"type": "message_start", "message": message})
        return _event(b"message_start", start) + PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._blocks - 1
        return _event(b"content_block_stop", b'{"type":"content_block_stop","index":%d}' % index)

    def _begin(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = key
        index = self._blocks
        self._blocks += 1
        body = {"type": "content_block_start", "index": index, "content_block": block}
        return out + _event(b"content_block_start", _encode(body))

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}
        return _event(b"content_block_delta", _encode(body))

    def event(self, event: Event) -> bytes:  # noqa: PLR0911 - one return per kind
        kind = type(event)
        if kind is Chunk:
            return self._text(event.text)  # type: ignore[union-attr]
        if kind is ToolCallDelta:
            return self._tool(event)  # type: ignore[arg-type]
        if kind is Thinking:
            return self._thinking(event)  # type: ignore[arg-type]
        if kind is Usage:
            self._usage = event  # type: ignore[assignment]
            return b""
        if kind is Done:
            return self._end(event.finish_reason)  # type: ignore[union-attr]
        if kind is Failed:
            return self._close() + ANTHROPIC_ERRORS.stream_error(event, self.request_id)  # type: ignore[arg-type]
        return b""

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or self._open[0] != "text":
            out = self._begin(("text", 0), _TEXT_START)
            self._text_head = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                b'"delta":{"type":"text_delta","text":' % (self._blocks - 1)
            )
        return out + self._text_head + _encode(text) + b"}}\n\n"

    def _tool(self, piece: ToolCallDelta) -> bytes:
        out = b""
        key = ("tool", piece.index)
        if piece.id is not None or self._open != key:
            block = {
                "type": "tool_use",
                "id": piece.id or "",
                "name": piece.name or "",
                "input": {},
            }
            out = self._begin(key, block)
        if piece.arguments:
            out += self._delta({"type": "input_json_delta", "partial_json": piece.arguments})
        return out

    def _thinking(self, piece: Thinking) -> bytes:
        if piece.redacted is not None:
            block = {"type": "redacted_thinking", "data": piece.redacted}
            return self._begin(("redacted", piece.index), block)
        out = b""
        key = ("thinking", piece.index)
        if self._open != key:
            out = self._begin(key, {"type": "thinking", "thinking": "", "signature": ""})
        if piece.text:
            out += self._delta({"type": "thinking_delta", "thinking": piece.text})
        if piece.signature:
            out += self._delta({"type": "signature_delta", "signature": piece.signature})
        return out

    def _end(self, finish_reason: str | None) -> bytes:
        usage = self._usage
        if self.summary is not None and self.summary.usage is not None:
            usage = self.summary.usage  # the request's final usage (maybe estimated)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish_reason), "stop_sequence": None},
            "usage": usage_body(usage),
        }
        return self._close() + _event(b"message_delta", _encode(delta)) + MESSAGE_STOP
