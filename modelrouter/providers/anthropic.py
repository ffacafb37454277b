"""Anthropic's Messages API (`POST /v1/messages`): SSE with one named event per step.

The leading system messages become `system`; `max_tokens`, which Anthropic requires, defaults
to `DEFAULT_MAX_TOKENS`; tool calls and tool results become `tool_use` and `tool_result`
content blocks; stop reasons are mapped onto OpenAI's finish reasons. What the Messages API
documents as invalid (see `AnthropicAdapter.unsupported`) is refused at planning, so another
provider serves it instead of the client getting Anthropic's 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

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
from modelrouter.providers.base import (
    Adapter,
    Completion,
    Refusal,
    bad_response,
    call_arguments,
    decode,
    given,
    requested_features,
    stop_list,
    unreadable_arguments,
)
from modelrouter.schemas import ChatRequest, CountChat, FunctionDef, Message, NativeChat

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # sent when the request sets none: every current model allows it
# https://docs.anthropic.com/en/api/messages: `temperature` "Ranges from 0.0 to 1.0" (OpenAI's
# goes to 2) and defaults to 1.0.
MAX_TEMPERATURE = 1.0
DEFAULT_TEMPERATURE = 1.0
NEUTRAL_TOP_P = 1.0  # nucleus sampling over every token: no cut
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The `anthropic-beta` values a client's request may pass on (the rest are left out): the
# ones that change how a request is read or streamed, not what the account is billed for
# (a longer context window's beta is priced apart, so it is not here).
ALLOWED_BETAS = frozenset(
    {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "prompt-caching-2024-07-31",
        "extended-cache-ttl-2025-04-11",
        "output-128k-2025-02-19",
        "context-management-2025-06-27",
        "pdfs-2024-09-25",
    }
)
# What count_tokens does not take (https://docs.anthropic.com/en/api/messages-count-tokens):
# the fields that shape the answer, not the input counted.
NOT_COUNTED = frozenset(
    {"max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"}
    | {"service_tier"}
)
_encode = msgspec.json.Encoder().encode


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def usage(self) -> Usage:
        """`input_tokens` excludes the cache's reads and writes: the prompt is all three
        (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching); thinking is
        part of `output_tokens`, not counted apart."""
        read = max(self.cache_read_input_tokens or 0, 0)
        write = max(self.cache_creation_input_tokens or 0, 0)
        prompt = max(self.input_tokens or 0, 0) + read + write
        return Usage(prompt, self.output_tokens, cached_input=read, cache_write=write)


class _Block(msgspec.Struct):
    type: str
    text: str = ""
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    thinking: str = ""
    signature: str = ""
    data: str | None = None  # a redacted_thinking block's


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str = ""
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""
    stop_reason: str | None = None


class _Message(msgspec.Struct):
    content: list[_Block] | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None  # an error body has no content


class _Count(msgspec.Struct):
    input_tokens: int


class _Event(msgspec.Struct):
    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_event = msgspec.json.Decoder(_Event).decode
_decode_count = msgspec.json.Decoder(_Count).decode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def _failure(error: _Error) -> UpstreamFailure:
    """An error object where an answer was expected (`overloaded_error` is a server error)."""
    text = f"error from upstream: {error.type}: {error.message}"
    return UpstreamFailure(
        "rate_limited" if error.type == "rate_limit_error" else "server_error", text
    )


def _finish(stop_reason: str | None) -> str:
    return STOP_REASONS.get(stop_reason or "end_turn", "stop")


def _thinking(index: int, block: _Block) -> Thinking | None:
    if block.type == "thinking":
        return Thinking(index, block.thinking, block.signature)
    if block.type == "redacted_thinking":
        return Thinking(index, redacted=block.data or "")
    return None


class AnthropicAdapter(Adapter):
    framing = "sse"
    api = "anthropic"
    capabilities = frozenset({"tools", "tool_choice", "parallel_tool_calls", "user"})

    def endpoint(self, base_url: str) -> str:
        return f"{base_url}/v1/messages"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        return headers | {"x-api-key": api_key} if api_key else headers

    def unsupported(self, request: ChatRequest, features: list[str] | None = None) -> list[Refusal]:
        if isinstance(request, NativeChat) and request.native.api == "anthropic":
            return []  # passed through as received: Anthropic's API judges it
        if features is None:
            features = requested_features(request)
        refused = super().unsupported(request, features)
        temperature, top_p = request.temperature, request.top_p
        if temperature is not None and temperature > MAX_TEMPERATURE:
            refused.append(Refusal("temperature", "above 1, Anthropic's maximum"))
        if temperature is not None and top_p is not None and _neither_neutral(temperature, top_p):
            # https://platform.claude.com/docs/en/about-claude/models/migration-guide: from the
            # Claude 4.5 models on, "temperature and top_p cannot both be specified" (a 400);
            # https://docs.anthropic.com/en/api/messages: "alter temperature or top_p, but not
            # both". Neither can stand in for the other, so this pair goes elsewhere.
            refused.append(Refusal("top_p", "together with temperature; Anthropic takes one"))
        if request.stop is not None and any(not s.strip() for s in stop_list(request.stop) or ()):
            # https://docs.anthropic.com/en/api/openai-sdk: "All non-whitespace stop sequences
            # work"; the Messages API answers 400 "each stop sequence must contain
            # non-whitespace" (dropping it would change where the answer ends).
            refused.append(Refusal("stop", "a whitespace-only stop sequence"))
        refused += _conversation_refusals(request.messages)
        if "tools" in features:  # the history holds tool calls only if so
            refused += unreadable_arguments(request.messages)
        return refused

    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        if type(request) is NativeChat and request.native.api == "anthropic":
            # The client's own body, as received but for the model this deployment serves.
            native = _decode_object(request.native.body)
            native["model"] = model
            native["stream"] = stream
            return _encode(native)
        messages = request.messages
        lead = _leading_system(messages)
        system = "\n\n".join(m.content for m in messages[:lead])
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                _turn(m, i) for i, m in enumerate(messages) if i >= lead and not _empty_reply(m)
            ],
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            body["system"] = system
        body.update(_sampling(request))
        if request.stop is not None:
            body["stop_sequences"] = stop_list(request.stop)
        if request.tools:
            body["tools"] = [_tool(t.function) for t in request.tools]
        choice = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
        if request.user is not None:
            body["metadata"] = {"user_id": request.user}
        return _encode(body)

    def map_response(self, body: bytes) -> Completion:
        parsed = decode(_decode_message, body, "response body")
        if parsed.error is not None:
            raise _failure(parsed.error)
        if parsed.content is None:
            raise bad_response("response has no content")
        text = "".join(block.text for block in parsed.content if block.type == "text")
        thinking = [
            found
            for i, block in enumerate(parsed.content)
            if (found := _thinking(i, block)) is not None
        ]
        calls = [
            ToolCallDelta(i, block.id, block.name, _encode(block.input or {}).decode())
            for i, block in enumerate(b for b in parsed.content if b.type == "tool_use")
        ]
        usage = parsed.usage.usage() if parsed.usage is not None else Usage()
        return Completion(text, usage, _finish(parsed.stop_reason), calls, thinking)

    def map_chunk(self, payload: bytes) -> list[Event]:
        event = decode(_decode_event, payload, "stream event")
        handler = _EVENT_HANDLERS.get(event.type)
        return handler(event) if handler is not None else []  # ping, block stop, newer kinds

    def count_endpoint(self, base_url: str) -> str | None:
        return f"{base_url}/v1/messages/count_tokens"

    def map_count_request(self, request: CountChat, model: str) -> bytes:
        body = _decode_object(request.native.body)
        counted = {k: v for k, v in body.items() if k not in NOT_COUNTED}
        return _encode(counted | {"model": model})

    def map_count_response(self, body: bytes) -> int:
        return decode(_decode_count, body, "count body").input_tokens

    def request_headers(self, request: ChatRequest) -> bytes:
        """The client's `anthropic-beta` values that ALLOWED_BETAS lets through."""
        if not isinstance(request, NativeChat) or not request.native.betas:
            return b""
        betas = [b.strip() for b in request.native.betas.split(",")]
        allowed = ",".join(b for b in betas if b in ALLOWED_BETAS)
        return f"anthropic-beta: {allowed}\r\n".encode() if allowed else b""

    def error_text(self, body: bytes) -> str | None:
        try:
            error = _decode_message(body).error
        except ValueError:
            return None
        return error.message if error is not None else None


def _block_delta(event: _Event) -> list[Event]:
    delta = event.delta
    if delta is None:
        return []
    if delta.type == "text_delta":
        return [Chunk(delta.text)] if delta.text else []
    if delta.type == "input_json_delta":
        return [ToolCallDelta(event.index, arguments=delta.partial_json)]
    if delta.type == "thinking_delta":
        return [Thinking(event.index, delta.thinking)]
    if delta.type == "signature_delta":
        return [Thinking(event.index, signature=delta.signature)]
    return []  # newer kinds (citations) are not relayed


def _block_start(event: _Event) -> list[Event]:
    block = event.content_block
    if block is not None and block.type == "tool_use":
        return [ToolCallDelta(event.index, block.id, block.name, "")]
    if block is not None and block.type == "text" and block.text:
        return [Chunk(block.text)]
    thinking = _thinking(event.index, block) if block is not None else None
    return [thinking] if thinking is not None else []


def _message_start(event: _Event) -> list[Event]:
    usage = event.message.usage if event.message is not None else None
    return [usage.usage()] if usage is not None else []


def _message_delta(event: _Event) -> list[Event]:
    events: list[Event] = []
    if event.delta is not None and event.delta.stop_reason is not None:
        events.append(Finish(_finish(event.delta.stop_reason)))
    if event.usage is not None:
        events.append(event.usage.usage())
    return events


def _message_stop(event: _Event) -> list[Event]:  # noqa: ARG001 - one signature for all
    return [Done()]


def _error(event: _Event) -> list[Event]:
    raise _failure(event.error or _Error("error", "unknown error"))


_EVENT_HANDLERS: dict[str, Callable[[_Event], list[Event]]] = {
    "content_block_delta": _block_delta,
    "content_block_start": _block_start,
    "message_start": _message_start,
    "message_delta": _message_delta,
    "message_stop": _message_stop,
    "error": _error,
}


def _sampling(request: ChatRequest) -> dict[str, float]:
    """`temperature` and `top_p` as sent. When both are set and one is at its neutral value
    (temperature 1.0 is Anthropic's default; top_p 1.0 keeps every token), that one says
    nothing and is left out; `unsupported` refuses any other pair."""
    sampling = given(request, {"temperature": "temperature", "top_p": "top_p"})
    if len(sampling) == 2:
        if sampling["top_p"] == NEUTRAL_TOP_P:
            del sampling["top_p"]
        elif sampling["temperature"] == DEFAULT_TEMPERATURE:
            del sampling["temperature"]
    return sampling


def _neither_neutral(temperature: float, top_p: float) -> bool:
    return temperature != DEFAULT_TEMPERATURE and top_p != NEUTRAL_TOP_P


def _leading_system(messages: list[Message]) -> int:
    """How many system messages open the conversation (they become the top-level `system`)."""
    count = 0
    for message in messages:
        if message.role != "system":
            break
        count += 1
    return count


def _empty_reply(message: Message) -> bool:
    """An assistant turn with no text and no tool call. The Messages API answers 400 "all
    messages must have non-empty content except for the optional final assistant message", and
    "Consecutive user or assistant turns in your request will be combined into a single turn"
    (https://docs.anthropic.com/en/api/messages), so leaving the empty turn out says the same
    thing (at the end too: an empty prefill adds nothing)."""
    return message.role == "assistant" and not message.tool_calls and not message.content.strip()


def _conversation_refusals(messages: list[Message]) -> list[Refusal]:
    refused: list[Refusal] = []
    started = False
    for message in messages:
        if message.role == "user" and not message.content.strip():
            # The same 400 as an empty assistant turn, but leaving a user turn out could make
            # the conversation end on an assistant turn, which Anthropic would continue.
            refused.append(Refusal("messages", "a user message without text"))
            break
        if message.role != "system":
            started = True
        elif started:
            # Anthropic takes system text in the top-level `system`, before the conversation
            # (https://docs.anthropic.com/en/api/messages: "there is no system role for input
            # messages"); a `system` turn later on is accepted by Claude Opus 4.8 alone
            # (https://platform.claude.com/docs/en/build-with-claude/mid-conversation-system-messages)
            # and folding it into `system` would move the instruction (what Anthropic's own
            # OpenAI layer does: https://docs.anthropic.com/en/api/openai-sdk). Another provider
            # keeps it where it is.
            refused.append(Refusal("messages", "a system message after the conversation started"))
            break
    if not started and not refused:
        refused.append(Refusal("messages", "system messages only, no turn to answer"))
    last = messages[-1]
    if last.role == "assistant" and last.content.strip() and last.content != last.content.rstrip():
        # A final assistant turn is a prefill, which "cannot end with trailing whitespace" (400).
        refused.append(Refusal("messages", "a final assistant turn ending in whitespace"))
    return refused


def _turn(message: Message, position: int) -> dict[str, Any]:
    """One message as Anthropic wants it; a plain text turn keeps its content a string."""
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        return {"role": "user", "content": [result | {"content": message.content}]}
    if not message.tool_calls:
        return {"role": message.role, "content": message.content}
    blocks: list[dict[str, Any]] = []
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        arguments = call_arguments(call)
        if arguments is None:
            raise UpstreamFailure(
                None, f"messages[{position}]: tool call arguments are not a JSON object", status=400
            )
        use = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        blocks.append(use)
    return {"role": "assistant", "content": blocks}


def _tool(function: FunctionDef) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": function.name}
    if function.description:
        tool["description"] = function.description
    tool["input_schema"] = function.parameters or {"type": "object", "properties": {}}
    return tool


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif isinstance(choice, str):
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    else:
        out = {"type": "tool", "name": choice.function.name}
    if request.parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = (out or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    return out
