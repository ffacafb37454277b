"""The OpenAPI shapes of `/v1/messages` (Anthropic's), `/v1/messages/count_tokens` and
`/v1/embeddings` (OpenAI's), as their handlers read and write them; `web.openapi` puts them
in the document (and the fuzz test checks every answer against them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from modelrouter.web.embeddings import MAX_INPUTS

Operation = Callable[..., dict[str, Any]]


class TextBlock(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: str


class ToolUseBlock(msgspec.Struct, frozen=True, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlock(msgspec.Struct, frozen=True, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlock(msgspec.Struct, frozen=True, tag="redacted_thinking", tag_field="type"):
    data: str


class AnthropicTurn(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AnthropicTool(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    input_schema: dict[str, Any]
    description: str | None = None


class AnthropicToolChoice(msgspec.Struct, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AnthropicMetadata(msgspec.Struct, frozen=True):
    user_id: str | None = None


class CountTokensRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/messages/count_tokens`: Anthropic's request without `max_tokens`. To an
    Anthropic deployment the body goes as received (the model replaced); other fields are
    taken as Anthropic's API takes them."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: list[AnthropicTurn]
    system: str | list[dict[str, Any]] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest, frozen=True, kw_only=True):
    """`POST /v1/messages`: Anthropic's Messages request. Passed through as received to an
    Anthropic deployment (the model replaced); mapped for the other kinds, which are skipped
    when the request holds what the mapping loses (docs/anthropic.md)."""

    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    stream: bool | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    top_k: int | None = None
    stop_sequences: Annotated[list[str], msgspec.Meta(max_length=16)] | None = None
    metadata: AnthropicMetadata | None = None


class AnthropicUsage(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class AnthropicMessage(msgspec.Struct, frozen=True):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str  # provider/model, as on /v1/chat/completions
    content: list[TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock]
    stop_reason: Literal["end_turn", "max_tokens", "tool_use", "refusal"]
    stop_sequence: None
    usage: AnthropicUsage


class TokenCount(msgspec.Struct, frozen=True):
    input_tokens: int


class AnthropicError(msgspec.Struct, frozen=True):
    type: str
    message: str


class AnthropicErrorEnvelope(msgspec.Struct, frozen=True):
    type: Literal["error"]
    error: AnthropicError
    request_id: str


class EmbeddingsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/embeddings`: `input` is a string, a list of strings, a token array or a
    list of token arrays (at most 2048 inputs)."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    input: (
        Annotated[str, msgspec.Meta(min_length=1)]
        | Annotated[list[Any], msgspec.Meta(min_length=1, max_length=MAX_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Embedding(msgspec.Struct, frozen=True):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingsUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, frozen=True):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


TYPES: tuple[Any, ...] = (
    MessagesRequest,
    CountTokensRequest,
    AnthropicMessage,
    TokenCount,
    AnthropicErrorEnvelope,
    EmbeddingsRequest,
    EmbeddingList,
)
ANTHROPIC_EVENTS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
]


def paths(
    operation: Operation,
    answer: Callable[[str, dict[str, Any]], dict[str, Any]],
    json: Callable[[str], dict[str, Any]],
    errors: Callable[[tuple[int, ...], str], dict[str, Any]],
    statuses: tuple[int, ...],
) -> dict[str, Any]:
    """The three paths, built with `web.openapi`'s helpers."""
    event = {
        "type": "object",
        "properties": {"event": {"enum": ANTHROPIC_EVENTS}, "data": {"type": "string"}},
        "required": ["data"],
    }
    anthropic_errors = errors(statuses, "AnthropicErrorEnvelope")
    message = json("AnthropicMessage") | {"text/event-stream": {"schema": event}}
    return {
        "/v1/messages": {
            "post": operation(
                "Anthropic's Messages API (a stream of its named events when `stream` is true);"
                " `x-api-key` or `Authorization: Bearer`",
                {"200": answer("the message", message)} | anthropic_errors,
                body="MessagesRequest",
            )
        },
        "/v1/messages/count_tokens": {
            "post": operation(
                "The request's input tokens, counted by the deployment that would answer it "
                "(a 400 when it cannot count)",
                {"200": answer("the count", json("TokenCount"))} | anthropic_errors,
                body="CountTokensRequest",
            )
        },
        "/v1/embeddings": {
            "post": operation(
                "OpenAI's embeddings (fallback only among deployments of the same model)",
                {"200": answer("the vectors", json("EmbeddingList"))}
                | errors(statuses, "OpenAIErrorEnvelope"),
                body="EmbeddingsRequest",
            )
        },
    }
