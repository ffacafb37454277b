"""Writing answers in OpenAI's formats: `chat.completion`, `chat.completion.chunk`, errors.

Both carry a `provider` field (as OpenRouter's do) and `model` as `provider/model`, the id
that `GET /v1/models` lists and that routes back to the same place.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from modelrouter.events import Answering, Chunk, Done, Event, Failed, ToolCallDelta, Usage
from modelrouter.tenants.cost import Charge, usd
from modelrouter.web.errors import OPENAI_ERRORS
from modelrouter.web.runtime import Summary

_encode = msgspec.json.Encoder().encode
_OPEN_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'  # a chunk that does not finish


def model_id(answering: Answering) -> str:
    return f"{answering.provider}/{answering.model}"


def usage_body(usage: Usage, cost: Charge | None = None) -> dict[str, Any]:
    """OpenAI's usage object; with the request's cost (`cost_usd`, modelrouter's), its cached
    and reasoning tokens in OpenAI's details, and `estimated` when the gateway counted it."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_input:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_input}
    if usage.reasoning:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    if cost is not None:
        body["cost_usd"] = usd(cost.nanos)
    if usage.estimated:
        body["estimated"] = True
    return body


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
    answering: Answering,
    *,
    request_id: str,
    text: str,
    tool_calls: list[ToolCallDelta],
    usage: Usage,
    finish_reason: str,
    cost: Charge | None = None,
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
        "model": model_id(answering),
        "system_fingerprint": None,  # OpenAI's field; no fingerprint of the upstream is kept
        "provider": answering.provider,
        "choices": [choice],
        "usage": usage_body(usage, cost),
    }
    return _encode(body)


class OpenAIStream:
    """`chat.completion.chunk` events: the role (with the first tool call, if the answer starts
    with one), content or tool-call deltas, a chunk with the finish reason, the usage chunk if
    asked for (with the request's cost, read from `summary` where the request's end put it),
    then `data: [DONE]`. A failure after the first byte is an `event: error` whose data is an
    OpenAI error object, with no `[DONE]`."""

    __slots__ = (
        "_base",
        "_head",
        "_role_sent",
        "_tool_calls",
        "_usage",
        "include_usage",
        "request_id",
        "summary",
    )

    def __init__(
        self, request_id: str, *, include_usage: bool, summary: Summary | None = None
    ) -> None:
        self.request_id = request_id
        self.include_usage = include_usage
        self.summary = summary
        self._tool_calls = ToolCalls()
        self._usage = Usage()
        self._base: dict[str, Any] = {}
        self._head = b""
        self._role_sent = False

    def start(self, answering: Answering) -> bytes:
        self._base = {
            "id": f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model_id(answering),
            "system_fingerprint": None,  # present, as in OpenAI's chunks; none is kept
            "provider": answering.provider,
        }
        # Every chunk shares this prefix up to its delta; only the delta is encoded per chunk.
        self._head = b"data: " + _encode(self._base)[:-1] + b',"choices":[{"index":0,"delta":'
        return b""  # the role goes with the first event, which decides its `content`

    def _role(self, event: Event) -> bytes:
        """OpenAI's first delta: `"content": null` with the first tool call when the answer
        starts with one, else `"content": ""` on its own before the text."""
        self._role_sent = True
        if type(event) is ToolCallDelta:
            call = self._tool_calls.delta(event)
            return self._chunk({"role": "assistant", "content": None, "tool_calls": [call]})
        return self._chunk({"role": "assistant", "content": ""}) + self.event(event)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        tail = b',"logprobs":null,"finish_reason":' + _encode(finish_reason) + b"}]}\n\n"
        return self._head + _encode(delta) + tail

    def event(self, event: Event) -> bytes:  # noqa: PLR0911 - one return per kind, per chunk
        if not self._role_sent:
            return self._role(event)
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
            return OPENAI_ERRORS.stream_error(event, self.request_id)  # type: ignore[arg-type]
        return b""

    def _end(self, finish_reason: str) -> bytes:
        out = self._chunk({}, finish_reason)
        if self.include_usage:
            summary = self.summary
            usage, cost = self._usage, None
            if summary is not None:  # the request's final usage (maybe estimated) and cost
                usage, cost = summary.usage or usage, summary.cost
            final = {**self._base, "choices": [], "usage": usage_body(usage, cost)}
            out += b"data: " + _encode(final) + b"\n\n"
        return out + b"data: [DONE]\n\n"
