"""OpenAI's Chat Completions wire format, shared by Groq, OpenRouter and OpenAI."""

from __future__ import annotations

from typing import Any

import msgspec

from modelrouter.config import ProviderSettings
from modelrouter.events import Chunk, Done, Event, Finish, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers.base import (
    BILLING_EXHAUSTED,
    FEATURES,
    Adapter,
    Completion,
    bad_response,
    classify_status,
    decode,
    given,
)
from modelrouter.schemas import ChatRequest, EmbedChat

_encode = msgspec.json.Encoder().encode


class _Error(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0  # of prompt_tokens


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0  # of completion_tokens


class _Usage(msgspec.Struct):
    """OpenAI's usage: `prompt_tokens` includes `prompt_tokens_details.cached_tokens`, and
    `completion_tokens` includes `completion_tokens_details.reasoning_tokens`
    (https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None

    def usage(self) -> Usage:
        prompt, completion = self.prompt_tokens, self.completion_tokens
        details, done = self.prompt_tokens_details, self.completion_tokens_details
        if details is None and done is None:  # most servers: the totals alone
            return Usage(prompt, completion)
        cached = (details.cached_tokens or 0) if details is not None else 0
        reasoning = (done.reasoning_tokens or 0) if done is not None else 0
        # A kind is part of its total: never more than it, whatever a server says.
        return Usage(
            prompt,
            completion,
            cached_input=min(max(cached, 0), max(prompt, 0)),
            reasoning=min(max(reasoning, 0), max(completion, 0)),
        )


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str = ""


class _ToolCall(msgspec.Struct):
    index: int | None = None  # streamed deltas carry it; whole messages list calls in order
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Body(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _Error | str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | str


class _Embedding(msgspec.Struct):
    embedding: list[float]
    index: int = 0


class _Embeddings(msgspec.Struct):
    data: list[_Embedding]
    usage: _Usage | None = None


_decode_embeddings = msgspec.json.Decoder(_Embeddings).decode


_decode_body = msgspec.json.Decoder(_Body).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def _tool_calls(calls: list[_ToolCall] | None) -> list[ToolCallDelta]:
    out: list[ToolCallDelta] = []
    for position, call in enumerate(calls or ()):
        function = call.function or _Function()
        index = position if call.index is None else call.index
        out.append(ToolCallDelta(index, call.id, function.name, function.arguments))
    return out


def error_code(body: bytes) -> str | None:
    """The `code` of an error body, as text (None when the body is not one)."""
    try:
        error = _decode_error(body).error
    except ValueError:
        return None
    if isinstance(error, str) or error.code is None:
        return None
    return str(error.code)


RATE_LIMIT_MARKERS = frozenset({"rate_limit_exceeded", "rate_limit_error", "429", 429})


def stream_error(error: _Error | str) -> UpstreamFailure:
    """An error object where an answer was expected (Groq and OpenAI put the kind in `code`)."""
    if isinstance(error, str):
        return UpstreamFailure("server_error", f"error from upstream: {error}")
    text = f"error from upstream: {error.message}"
    if _billing_exhausted(error):
        return UpstreamFailure("auth_error", text)
    if error.type in RATE_LIMIT_MARKERS or error.code in RATE_LIMIT_MARKERS:
        return UpstreamFailure("rate_limited", text)
    return UpstreamFailure("server_error", text)


def _billing_exhausted(error: _Error | str) -> bool:
    return not isinstance(error, str) and (
        error.type in BILLING_EXHAUSTED or error.code in BILLING_EXHAUSTED
    )


def _error_of(body: bytes) -> _Error | str | None:
    try:
        return _decode_error(body).error
    except ValueError:
        return None


_FIELDS = {name: name for name in ("max_tokens", "temperature", "top_p", "stop", *FEATURES)}


class OpenAICompatAdapter(Adapter):
    framing = "sse"
    capabilities = frozenset(FEATURES) - {"n"}  # the gateway relays one choice

    def __init__(self, settings: ProviderSettings) -> None:
        # A routing file's `stream_options: false`: for servers that refuse the field (some
        # vLLM and TGI versions, older Azure API versions); their streams then carry no usage.
        self.stream_options = settings.stream_options
        super().__init__(settings)

    embeds_tokens = True
    embed_fields = frozenset({"dimensions", "user"})

    def endpoint(self, base_url: str) -> str:
        return f"{base_url}/chat/completions"

    def embed_endpoint(self, base_url: str) -> str | None:
        return f"{base_url}/embeddings"

    def map_embed_request(self, request: EmbedChat, model: str) -> bytes:
        embed = request.embed
        body: dict[str, Any] = {"model": model, "input": embed.texts or embed.tokens}
        body["encoding_format"] = "float"  # base64 for the client is encoded here
        if embed.dimensions is not None:
            body["dimensions"] = embed.dimensions
        if request.user is not None:
            body["user"] = request.user
        return _encode(body)

    def map_embed_response(self, body: bytes) -> tuple[list[list[float]], Usage]:
        parsed = decode(_decode_embeddings, body, "embeddings body")
        vectors = [item.embedding for item in sorted(parsed.data, key=lambda item: item.index)]
        return vectors, parsed.usage.usage() if parsed.usage is not None else Usage()

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": model, "messages": request.messages, "stream": stream}
        if stream and self.stream_options:
            body["stream_options"] = {"include_usage": True}
        body.update(given(request, _FIELDS))  # the same names upstream: relayed as they came
        return _encode(body)

    def map_response(self, body: bytes) -> Completion:
        parsed = decode(_decode_body, body, "response body")
        if parsed.error is not None:
            raise stream_error(parsed.error)
        if not parsed.choices or parsed.choices[0].message is None:
            raise bad_response("response has no choices[0].message")
        choice = parsed.choices[0]
        assert choice.message is not None
        usage = parsed.usage.usage() if parsed.usage is not None else Usage()
        calls = _tool_calls(choice.message.tool_calls)
        return Completion(choice.message.content or "", usage, choice.finish_reason, calls)

    def map_chunk(self, payload: bytes) -> list[Event]:
        if payload == b"[DONE]":
            return [Done()]
        parsed = decode(_decode_body, payload, "stream event")
        if parsed.error is not None:
            raise stream_error(parsed.error)
        events: list[Event] = []
        for choice in parsed.choices[:1]:
            delta = choice.delta
            if delta is not None and delta.content:
                events.append(Chunk(delta.content))
            if delta is not None and delta.tool_calls:
                events += _tool_calls(delta.tool_calls)
            if choice.finish_reason:
                events.append(Finish(choice.finish_reason))
        if parsed.usage is not None:
            events.append(parsed.usage.usage())
        return events

    def error_text(self, body: bytes) -> str | None:
        error = _error_of(body)
        if error is None:
            return None
        return error if isinstance(error, str) else error.message

    def failure(
        self, status: int, body: bytes, retry_after: float | None, redirect_to: str | None = None
    ) -> UpstreamFailure:
        """As every adapter's, but an error saying the account's billing is exhausted (a 429
        from OpenAI) is a configuration fault, not a rate limit."""
        error = _error_of(body)
        return classify_status(
            status,
            self.error_message(body),
            retry_after,
            redirect_to,
            billing_exhausted=error is not None and _billing_exhausted(error),
        )
