"""Reading an Anthropic Messages request: the body kept as received (for Anthropic
deployments) beside its mapping onto the gateway's `ChatRequest` (for every other kind, the
history and the cache key).

The mapping keeps system text, text turns, tool definitions, tool calls and tool results, the
stop sequences, sampling and `metadata.user_id`. What it cannot carry (images, documents,
server tools, `top_k`, top-level fields it does not know) is noted as lost, so planning skips
the candidates that would need it; an Anthropic deployment takes the whole body. Thinking
blocks of earlier turns are dropped from the mapping (Anthropic's API allows leaving them
out), and so is the `thinking` setting: a mapped model reasons as it does. `cache_control`
marks are hints and are dropped from the mapping too.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from modelrouter.errors import bad_request
from modelrouter.schemas import (
    MAX_MESSAGES,
    MAX_TOOLS,
    CountChat,
    FunctionCall,
    FunctionDef,
    Message,
    NamedFunction,
    NamedToolChoice,
    Native,
    NativeChat,
    Tool,
    ToolCall,
)
from modelrouter.web.nesting import check_nesting, deep_parameter

_decode_object = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
# Top-level fields the mapping reads, or may leave out without changing the answer's meaning.
MAPPED: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",  # a mapped model reasons as it does
        "service_tier",  # a scheduling hint
    }
)
_LOST_BLOCKS: Final = {"image": "images", "document": "documents"}
ONLY_ANTHROPIC = "only Anthropic deployments take it"


class _Block(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[_Block] | None = None
    is_error: bool | None = None


class _Turn(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _Tool(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom" or none: a function; else one of Anthropic's own tools


class _ToolChoice(msgspec.Struct, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Metadata(msgspec.Struct, frozen=True):
    user_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fields the mapping reads, with the gateway's own bounds (a ChatRequest's)."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: Annotated[list[_Turn], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    system: str | list[_Block] | None = None
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    top_k: int | None = None
    stop_sequences: Annotated[list[str], msgspec.Meta(max_length=16)] | None = None
    tools: Annotated[list[_Tool], msgspec.Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: _ToolChoice | None = None
    metadata: _Metadata | None = None
    thinking: Any = None  # a mapped model reasons as it does
    service_tier: Any = None  # a scheduling hint


_decode_request = msgspec.json.Decoder(_Request).decode


class MessagesRequest(msgspec.Struct, frozen=True):
    chat: NativeChat  # a CountChat for count_tokens
    stream: bool


class _Mapping:
    """The state of one request's mapping: the messages so far and what it loses."""

    __slots__ = ("lost", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lost: dict[str, str] = {}

    def lose(self, what: str, why: str = ONLY_ANTHROPIC) -> None:
        self.lost.setdefault(what, why)

    def text(self, blocks: str | list[_Block] | None) -> str:
        if blocks is None or isinstance(blocks, str):
            return blocks or ""
        parts: list[str] = []
        for block in blocks:
            if block.type == "text":
                parts.append(block.text or "")
            else:
                self.lose(_LOST_BLOCKS.get(block.type, f"{block.type} blocks"))
        return "\n".join(parts) if len(parts) > 1 else "".join(parts)

    def user(self, content: str | list[_Block]) -> None:
        if isinstance(content, str):
            self.messages.append(Message("user", content))
            return
        texts: list[_Block] = []
        for block in content:
            if block.type == "tool_result":
                result = self.text(block.content)
                if block.is_error:
                    result = f"[tool error] {result}"
                self.messages.append(Message("tool", result, tool_call_id=block.tool_use_id or ""))
            else:
                texts.append(block)
        if texts or not content:
            self.messages.append(Message("user", self.text(texts)))

    def assistant(self, content: str | list[_Block]) -> None:
        if isinstance(content, str):
            self.messages.append(Message("assistant", content))
            return
        texts: list[_Block] = []
        calls: list[ToolCall] = []
        for block in content:
            if block.type == "tool_use":
                arguments = _encode(block.input if block.input is not None else {}).decode()
                calls.append(ToolCall(block.id or "", FunctionCall(block.name or "", arguments)))
            elif block.type not in ("thinking", "redacted_thinking"):  # earlier turns' reasoning
                texts.append(block)
        message = Message("assistant", self.text(texts), tool_calls=calls or None)
        self.messages.append(message)


def parse_messages_request(
    body: bytes, *, betas: str = "", counting: bool = False
) -> MessagesRequest:
    """Read a `/v1/messages` body (`counting`: `/v1/messages/count_tokens`, which takes no
    `max_tokens`); a 400 naming the fault if it is not one. The body itself is kept as it
    came, for Anthropic deployments."""
    mapping = _Mapping()
    request = _read(body, mapping)
    if request.max_tokens is None and not counting:
        raise bad_request("max_tokens: Field required", param="max_tokens")
    if request.top_k is not None:
        mapping.lose("top_k")
    fields = _fields(request, mapping)
    if len(mapping.messages) > MAX_MESSAGES:
        raise bad_request(f"more than {MAX_MESSAGES} messages once mapped", param="messages")
    native = Native("anthropic", body, betas, tuple(sorted(mapping.lost.items())))
    chat = (CountChat if counting else NativeChat)(**fields, native=native)
    check_nesting(chat)
    return MessagesRequest(chat, request.stream and not counting)


def _read(body: bytes, mapping: _Mapping) -> _Request:
    """The fields the mapping reads, in one typed decode; a body with fields it does not know
    is read again (rarely) to note them as lost."""
    try:
        return _decode_request(body)
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            raise bad_request(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise deep_parameter(body) from None
    try:  # valid JSON: the typed decode got as far as an unknown field
        data = _decode_object(body)
    except RecursionError:
        raise deep_parameter(body) from None
    known = {name: value for name, value in data.items() if name in MAPPED}
    for name in data:
        if name not in MAPPED:
            mapping.lose(name)
    try:
        return msgspec.convert(known, _Request)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}") from None


def _fields(request: _Request, mapping: _Mapping) -> dict[str, Any]:
    if request.system:
        mapping.messages.append(Message("system", mapping.text(request.system)))
    for turn in request.messages:
        if turn.role == "user":
            mapping.user(turn.content)
        else:
            mapping.assistant(turn.content)
    fields: dict[str, Any] = {"messages": mapping.messages, "model": request.model}
    # Bounded by _Request's own: the same as a ChatRequest's.
    if request.max_tokens is not None:
        fields["max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is not None:
            fields[name] = value
    if request.stop_sequences:
        fields["stop"] = request.stop_sequences
    if request.metadata is not None and request.metadata.user_id is not None:
        fields["user"] = request.metadata.user_id
    tools = [_tool(tool, mapping) for tool in request.tools or ()]
    if tools:
        fields["tools"] = tools
    fields.update(_tool_choice(request.tool_choice))
    return fields


def _tool(tool: _Tool, mapping: _Mapping) -> Tool:
    if tool.type not in (None, "custom"):
        mapping.lose(f"{tool.type} tool")
    parameters = tool.input_schema or {"type": "object", "properties": {}}
    return Tool("function", FunctionDef(tool.name, tool.description, parameters))


def _tool_choice(choice: _ToolChoice | None) -> dict[str, Any]:
    if choice is None:
        return {}
    fields: dict[str, Any] = {}
    if choice.type == "tool":
        fields["tool_choice"] = NamedToolChoice("function", NamedFunction(choice.name or ""))
    else:
        fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        fields["parallel_tool_calls"] = False
    return fields
