"""Request and response shapes of the seed API (`/chat`, `/stream`), validated by msgspec."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Role = Literal["system", "user", "assistant"]
MAX_MESSAGES = 1024


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    role: Role
    content: str


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=16)] | None = None
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    fallback: bool = True


class ProviderMeta(msgspec.Struct, frozen=True):
    tokens_total: int
    tokens_prompt: int
    tokens_completion: int


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


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody


chat_request_decoder = msgspec.json.Decoder(ChatRequest)
json_encoder = msgspec.json.Encoder()
