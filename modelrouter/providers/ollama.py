"""Ollama's native chat API (`POST /api/chat`), NDJSON when streaming.

Documented at https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(and https://docs.ollama.com/capabilities/tool-calling). Tools take OpenAI's function format,
but a call's `arguments` is a JSON object where OpenAI has JSON text, calls carry no id (ids are
made here, the same for the same call), a streamed call comes whole in one line, and a tool
result names its tool in `tool_name`. A 404 means Ollama does not have the model.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from modelrouter.events import Chunk, Done, Event, Finish, ToolCallDelta, UpstreamFailure, Usage
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
from modelrouter.schemas import ChatRequest, EmbedChat, Message, ToolCall

_encode = msgspec.json.Encoder().encode


class _Embed(msgspec.Struct):
    """`/api/embed`'s answer (https://docs.ollama.com/api/embed)."""

    embeddings: list[list[float]]
    prompt_eval_count: int = 0


_decode_embed = msgspec.json.Decoder(_Embed).decode

# `done_reason` as OpenAI's finish_reason. Ollama writes "stop" after a tool call too (the
# adapter says tool_calls then); "load"/"unload" answer empty requests, which are never sent.
DONE_REASONS: Final = {"stop": "stop", "length": "length"}


class _Function(msgspec.Struct):
    name: str = ""
    arguments: dict[str, Any] = {}
    index: int | None = None  # newer versions number the calls of a turn (0 left out)


class _ToolCall(msgspec.Struct):
    function: _Function
    id: str | None = None  # newer versions may send one


class _Message(msgspec.Struct):
    content: str = ""
    tool_calls: list[_ToolCall] | None = None


class _Body(msgspec.Struct):
    message: _Message | None = None
    created_at: str = ""
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: str | None = None


_decode = msgspec.json.Decoder(_Body).decode


def _parse(payload: bytes, what: str) -> _Body:
    body = decode(_decode, payload, what)
    if body.error is not None:
        raise UpstreamFailure("server_error", f"error from ollama: {body.error}")
    return body


def _format(request: ChatRequest) -> object:
    """Ollama's `format`: "json" for JSON mode, the JSON Schema itself for structured output."""
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema" and response_format.json_schema:
        return response_format.json_schema.get("schema", "json")
    return "json"


def _finish(done_reason: str | None) -> str:
    return DONE_REASONS.get(done_reason or "stop", "stop")


def _calls(body: _Body) -> list[ToolCallDelta]:
    """The tool calls of one line, each whole, with an id: Ollama's own if it sent one, else
    one derived from the line's `created_at` and the call (the same bytes give the same id;
    two answers differ by their time)."""
    calls = body.message.tool_calls if body.message is not None else None
    out: list[ToolCallDelta] = []
    for position, call in enumerate(calls or ()):
        function = call.function
        index = position if function.index is None else function.index
        arguments = _encode(function.arguments).decode()
        call_id = call.id or _call_id(body.created_at, index, function.name, arguments)
        out.append(ToolCallDelta(index, call_id, function.name, arguments))
    return out


def _call_id(created_at: str, index: int, name: str, arguments: str) -> str:
    seed = f"{created_at}\x00{index}\x00{name}\x00{arguments}".encode()
    return "call_" + hashlib.blake2b(seed, digest_size=12).hexdigest()


def _messages(messages: list[Message]) -> list[Any]:
    """The conversation as Ollama takes it: as is, unless it holds tool turns."""
    if not any(m.tool_calls or m.role == "tool" for m in messages):
        return messages
    names: dict[str, str] = {}  # tool call id -> its function, for the results' `tool_name`
    out: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        turn: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            turn["tool_calls"] = [_call(call, position) for call in message.tool_calls]
            names.update((c.id, c.function.name) for c in message.tool_calls)
        if message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "")
            if name:
                turn["tool_name"] = name
        out.append(turn)
    return out


def _call(call: ToolCall, position: int) -> dict[str, Any]:
    """A tool call of the history; planning has refused arguments that are not an object."""
    arguments = call_arguments(call)
    if arguments is None:
        message = f"messages[{position}]: tool call arguments are not a JSON object"
        raise UpstreamFailure(None, message, status=400)
    return {"function": {"name": call.function.name, "arguments": arguments}}


_OPTIONS = {
    "max_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class OllamaAdapter(Adapter):
    framing = "ndjson"
    capabilities = frozenset(
        {
            "tools",
            "tool_choice",  # auto, or none (no tools sent); see unsupported
            "parallel_tool_calls",  # true, its default; see unsupported
            "response_format",
            "seed",
            "presence_penalty",
            "frequency_penalty",
        }
    )

    embed_fields = frozenset({"dimensions"})

    def endpoint(self, base_url: str) -> str:
        return f"{base_url}/api/chat"

    def embed_endpoint(self, base_url: str) -> str | None:
        return f"{base_url}/api/embed"

    def map_embed_request(self, request: EmbedChat, model: str) -> bytes:
        body: dict[str, Any] = {"model": model, "input": request.embed.texts or []}
        if request.embed.dimensions is not None:
            body["dimensions"] = request.embed.dimensions
        return _encode(body)

    def map_embed_response(self, body: bytes) -> tuple[list[list[float]], Usage]:
        parsed = decode(_decode_embed, body, "embed body")
        return parsed.embeddings, Usage(parsed.prompt_eval_count, 0)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        # Plain Ollama needs no key; hosted Ollama takes a Bearer token.
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def unsupported(self, request: ChatRequest, features: list[str] | None = None) -> list[Refusal]:
        if features is None:
            features = requested_features(request)
        if not features:  # everything below is about features
            return []
        refused = super().unsupported(request, features)
        # /api/chat has `tools` and nothing to force or limit their use.
        if request.tool_choice not in (None, "auto", "none"):
            refused.append(Refusal("tool_choice", "Ollama cannot force a tool call"))
        if request.parallel_tool_calls is False:
            refused.append(Refusal("parallel_tool_calls", "Ollama cannot limit a turn to one call"))
        if "tools" in features:  # the history holds tool calls only if so
            refused += unreadable_arguments(request.messages)
        return refused

    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        options = given(request, _OPTIONS)
        if request.stop is not None:
            options["stop"] = stop_list(request.stop)
        body: dict[str, Any] = {
            "model": model,
            "messages": _messages(request.messages),
            "stream": stream,
        }
        if request.tools and request.tool_choice != "none":  # none: the model may call nothing
            body["tools"] = request.tools
        if options:
            body["options"] = options
        response_format = _format(request)
        if response_format is not None:
            body["format"] = response_format
        return _encode(body)

    def map_response(self, body: bytes) -> Completion:
        parsed = _parse(body, "response body")
        if parsed.message is None:
            raise bad_response("response has no message")
        usage = Usage(parsed.prompt_eval_count, parsed.eval_count)
        calls = _calls(parsed)
        finish = "tool_calls" if calls else _finish(parsed.done_reason)
        return Completion(parsed.message.content, usage, finish, calls)

    def map_chunk(self, payload: bytes) -> list[Event]:
        parsed = _parse(payload, "stream line")
        events: list[Event] = []
        message = parsed.message
        if message is not None:
            if message.content:
                events.append(Chunk(message.content))
            if message.tool_calls:
                events += _calls(parsed)
                events.append(Finish("tool_calls"))  # the end line still says "stop"
        if parsed.done:
            events.append(Usage(parsed.prompt_eval_count, parsed.eval_count))
            events.append(Done(_finish(parsed.done_reason)))
        return events

    def error_text(self, body: bytes) -> str | None:
        try:
            parsed = _decode(body)
        except ValueError:
            return None
        return parsed.error or None

    def failure(
        self, status: int, body: bytes, retry_after: float | None, redirect_to: str | None = None
    ) -> UpstreamFailure:
        if status == 404:
            # /api/chat answers 404 for a model it does not have ("model 'x' not found, try
            # pulling it first"): the next provider may well have it, and this one is healthy.
            message = f"HTTP 404: {self.error_message(body)}"
            return UpstreamFailure("model_not_found", message, status=status)
        return super().failure(status, body, retry_after, redirect_to)
