"""The mock's Anthropic Messages flavour: whole messages and their stream of named events,
thinking blocks with signatures (when the request enables thinking; a thinking block sent back
must carry the signature the mock gave it), tool use, errors in Anthropic's shape."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgspec

from modelrouter.mock.flavours import _SLOT, Flavour, Reply, Script, _fill, _ids, _usage
from modelrouter.mock.text import ChatRequest, parse_chat

_encode = msgspec.json.Encoder().encode

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _event(name: str, obj: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(obj) + b"\n\n"


THINKING_TEXT = "The user greets me; a short greeting back will do."


def thinking_signature(thinking: str) -> str:
    """The mock's signature of a thinking block: a thinking block sent back must carry the
    one the mock gave it (as Anthropic verifies its own), or the request is refused."""
    return "sig_mock_" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def _check_thinking(messages: object) -> None:
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "thinking":
                text = block.get("thinking")
                if not isinstance(text, str) or block.get("signature") != thinking_signature(text):
                    raise ValueError("invalid `signature` in `thinking` block")


class Anthropic(Flavour):
    name = "anthropic"
    malformed_line = b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n'
    supports_tools = True

    def parse(self, body: dict[str, Any], target: str = "") -> ChatRequest:  # noqa: ARG002
        _check_thinking(body.get("messages"))
        chat = parse_chat(body, stream_default=False, prefills=True)  # a prefill: continued
        thinking = body.get("thinking")
        asked = isinstance(thinking, dict) and thinking.get("type") == "enabled"
        return dataclasses.replace(chat, thinking=asked) if asked else chat

    def error_body(self, status: int, message: str) -> bytes:
        kind = _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return _encode({"type": "error", "error": {"type": kind, "message": message}})

    def stream_error(self, message: str) -> bytes:
        error = {"type": "overloaded_error", "message": message}
        return _event("error", {"type": "error", "error": error})

    def complete(self, reply: Reply) -> bytes:
        content: list[Any] = []
        if reply.chat.thinking:
            content.append(_THINKING_BLOCK)
        if reply.tool_call:
            use = _tool_use(reply) | {"input": msgspec.json.decode(reply.text)}
            return _encode(self._message(reply, [*content, use], "tool_use"))
        content.append({"type": "text", "text": reply.text})
        return _encode(self._message(reply, content, "end_turn"))

    def script(self, reply: Reply) -> Script:
        start = {"type": "message_start", "message": self._message(reply, [], None)}
        head = _event("message_start", start)
        index = 0
        if reply.chat.thinking:
            head += _thinking_events()
            index = 1
        first: dict[str, Any] = _tool_use(reply) if reply.tool_call else _EMPTY_TEXT
        block = {"type": "content_block_start", "index": index, "content_block": first}
        piece = {"type": "input_json_delta", "partial_json": _SLOT}
        text = piece if reply.tool_call else {"type": "text_delta", "text": _SLOT}
        slot = {"type": "content_block_delta", "index": index, "delta": text}
        stop = "tool_use" if reply.tool_call else "end_turn"
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": len(reply.tokens)},
        }
        block_stop = _event("content_block_stop", {"type": "content_block_stop", "index": index})
        return Script(
            head=head + _event("content_block_start", block),
            pieces=_fill(b"event: content_block_delta\ndata: ", slot, b"\n\n", reply.tokens),
            tail=block_stop + _event("message_delta", delta) + _MESSAGE_STOP,
        )

    @staticmethod
    def _message(reply: Reply, content: list[Any], stop: str | None) -> dict[str, Any]:
        prompt, completion = _usage(reply)
        return {
            "id": f"msg_mock_{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": reply.chat.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion if stop else 0},
        }


def _thinking_events() -> bytes:
    """A thinking block streamed as Anthropic does: empty start, thinking, signature, stop."""
    empty = {"type": "thinking", "thinking": "", "signature": ""}
    half = len(THINKING_TEXT) // 2
    deltas = [
        {"type": "thinking_delta", "thinking": THINKING_TEXT[:half]},
        {"type": "thinking_delta", "thinking": THINKING_TEXT[half:]},
        {"type": "signature_delta", "signature": thinking_signature(THINKING_TEXT)},
    ]
    out = _event(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": empty}
    )
    for delta in deltas:
        out += _event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    return out + _BLOCK_STOP


def _tool_use(reply: Reply) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_mock_1", "name": reply.chat.tool_name, "input": {}}


_EMPTY_TEXT = {"type": "text", "text": ""}
_THINKING_BLOCK = {
    "type": "thinking",
    "thinking": THINKING_TEXT,
    "signature": thinking_signature(THINKING_TEXT),
}
_BLOCK_STOP = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})


ANTHROPIC = Anthropic()
