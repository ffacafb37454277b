"""Request and response shapes of the seed API (`/chat`, `/stream`), validated by msgspec."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]
MAX_MESSAGES = 1024
MAX_TOOLS = 128


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=True):
    role: Role
    content: str
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the call it answers
    name: str | None = None


class FunctionDef(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Penalty = Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)]


Operation = Literal["chat", "embed", "count"]


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    # What the upstream is asked: a chat answer, embeddings (EmbedChat), a count of the
    # request's input tokens (CountChat). Not a field: fixed by the request's type.
    operation: ClassVar[Operation] = "chat"

    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=16)] | None = None
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    fallback: bool = True
    # OpenAI's optional parameters, relayed to providers whose adapter can honour them (a
    # provider that cannot is left out of the plan; see providers.base.requested_features).
    tools: Annotated[list[Tool], msgspec.Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None


class Native(msgspec.Struct, frozen=True):
    """A request as the client's API wrote it (`api`: "anthropic"), carried beside its mapped
    form. A deployment of the same API gets `body` as received, with only `model` (and
    `stream`) replaced, and `betas` in its headers; any other kind gets the mapped
    `ChatRequest`, and is skipped when the request holds what the mapping loses (`lost`:
    (what, why) pairs, named in the 400 when no candidate is left)."""

    api: str
    body: bytes  # as received: decoded again only for a deployment of the same API
    betas: str = ""  # the `anthropic-beta` header's value to send on ("": none)
    lost: tuple[tuple[str, str], ...] = ()


class NativeChat(ChatRequest, frozen=True, kw_only=True):
    """A `ChatRequest` mapped from another API's request, which it also carries (never read
    from a client's JSON: `ChatRequest`'s decoders do not know `native`)."""

    native: Native


class EmbedInput(msgspec.Struct, frozen=True):
    """What to embed: `texts`, or `tokens` (arrays of token ids, for providers that take
    them); `dimensions`, when the client asks for shorter vectors."""

    texts: list[str] | None = None
    tokens: list[list[int]] | None = None
    dimensions: int | None = None


class EmbedChat(ChatRequest, frozen=True, kw_only=True):
    """An embeddings request, routed as a chat request is (planning, admission, fallback,
    cache): its `messages` are its texts, as the history and the estimates read them."""

    operation: ClassVar[Operation] = "embed"
    embed: EmbedInput

    def given_tokens(self) -> int:
        """The tokens of its token arrays (its texts are in `messages`)."""
        tokens = self.embed.tokens
        return 0 if tokens is None else sum(len(array) for array in tokens)


class CountChat(NativeChat, frozen=True, kw_only=True):
    """A request whose input tokens are to be counted by the deployment that would answer
    it (Anthropic's `count_tokens`): admitted and rate-limited as the request would be."""

    operation: ClassVar[Operation] = "count"


class ProviderMeta(msgspec.Struct, frozen=True):
    tokens_total: int
    tokens_prompt: int
    tokens_completion: int
    cost_usd: float | None = None  # modelrouter's: the usage at the price table's prices


class ChatResponse(msgspec.Struct, frozen=True):
    text: str
    provider: str
    model: str
    provider_meta: ProviderMeta
    request_id: str
    attempts: int


class ErrorBody(msgspec.Struct, frozen=True):
    type: str
    message: str
    request_id: str


class StreamError(msgspec.Struct, frozen=True):
    """The data of a stream's `event: error` (`/stream`): the error, and whether a retry can
    help (the same request, sent again, may succeed)."""

    type: str
    message: str
    request_id: str
    retryable: bool


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody


chat_request_decoder = msgspec.json.Decoder(ChatRequest)
json_encoder = msgspec.json.Encoder()
