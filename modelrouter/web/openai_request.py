"""Reading an OpenAI Chat Completions request into the gateway's `ChatRequest`.

Every parameter is either relayed (to providers that can honour it) or refused with a 400 that
names it: nothing is silently dropped. A `null` counts as absent, as it does for OpenAI.
Message objects are read leniently (SDKs echo back fields such as `refusal` or `annotations`),
but their content must be text: a string, text parts, or null.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from modelrouter.errors import ApiError, bad_request, unsupported_parameter
from modelrouter.providers.base import FEATURES
from modelrouter.schemas import ChatRequest
from modelrouter.web.nesting import check_nesting, deep_parameter

RELAYED: Final = frozenset(
    {"messages", "model", "max_tokens", "temperature", "top_p", "stop", *FEATURES}
)
EXTENSIONS: Final = frozenset({"provider", "fallback"})  # modelrouter's own, as on /chat
DEFAULT_OFF: Final = frozenset({"logprobs", "store"})  # `false` asks for nothing to honour
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_decode = msgspec.json.Decoder().decode


class CompletionRequest(msgspec.Struct, frozen=True):
    chat: ChatRequest
    stream: bool
    include_usage: bool


def parse_completion_request(body: bytes) -> CompletionRequest:
    try:
        data = _decode(body)
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise deep_parameter(body) from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    # null is absent, and so is an empty tool list (some clients send one).
    fields = {k: v for k, v in data.items() if v is not None and not (k == "tools" and v == [])}
    stream, include_usage = _stream_options(fields)
    if "max_completion_tokens" in fields:
        tokens = fields.pop("max_completion_tokens")
        if fields.setdefault("max_tokens", tokens) != tokens:
            raise bad_request(
                "max_tokens and max_completion_tokens differ", param="max_completion_tokens"
            )
    for key in list(fields):
        if key in DEFAULT_OFF and fields[key] is False:
            del fields[key]
        elif key not in RELAYED and key not in EXTENSIONS:
            raise unsupported_parameter(key, f"parameter `{key}` is not supported by modelrouter")
    if isinstance(fields.get("messages"), list):
        fields["messages"] = [_message(m, i) for i, m in enumerate(fields["messages"])]
    try:
        chat = msgspec.convert(fields, ChatRequest)
    except msgspec.ValidationError as exc:
        found = _PATH.search(str(exc))
        raise bad_request(f"invalid request: {exc}", param=found and found.group(1)) from None
    check_nesting(chat)
    return CompletionRequest(chat, stream, include_usage)


def _stream_options(fields: dict[str, Any]) -> tuple[bool, bool]:
    stream = fields.pop("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("`stream` must be true or false", param="stream")
    options = fields.pop("stream_options", None)
    if options is None:
        return stream, False
    if not stream:
        raise bad_request(
            "`stream_options` is only allowed with stream: true", param="stream_options"
        )
    if not isinstance(options, dict) or not set(options) <= {"include_usage"}:
        raise unsupported_parameter(
            "stream_options", "`stream_options` supports only include_usage"
        )
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise bad_request("include_usage must be true or false", param="stream_options")
    return stream, include_usage


def _message(message: Any, position: int) -> Any:
    """Normalise one message: `developer` is a system turn, content becomes plain text."""
    if not isinstance(message, dict):
        return message  # msgspec.convert names the problem
    message = dict(message)
    if message.get("role") == "developer":
        message["role"] = "system"
    content = message.get("content")
    if content is None:
        message["content"] = ""
    elif isinstance(content, list):
        message["content"] = _text_of(content, position)
    return message


def _text_of(parts: list[Any], position: int) -> str:
    texts: list[str] = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            where = f"messages[{position}].content"
            raise ApiError(
                400,
                "unsupported_parameter",
                f"{where}: only text content parts are supported (got {kind or part!r})",
                param=where,
            )
        texts.append(part["text"])
    return "".join(texts)
