"""Deterministic reply text and request reading shared by every flavour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelrouter.mock.faults import Faults

DEFAULT_MODEL = "mock-model"
DEFAULT_TOOL = "get_weather"
TOOL_ARGUMENTS = ('{"city":', ' "Paris"', "}")
"""Argument fragments of the mock tool call; joined: ``{"city": "Paris"}``."""

REPLY_TOKENS: tuple[str, ...] = (
    "Hello",
    " from",
    " the",
    " mock",
    " provider.",
    "\n",
    "Second",
    " line",
    " of",
    " the",
    " mock",
    " reply.",
)
_WORDS = re.compile(r"\s*\S+")


class ChatRequestError(ValueError):
    """The body is JSON but not a chat request the mock can answer."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the mock needs from a chat request, whatever its flavour."""

    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    last_user: str
    tool_name: str
    prefix: str | None = None  # an assistant turn to continue (a prefill, continue_final_message)
    thinking: bool = False  # Anthropic's extended thinking asked for: a thinking block first


def reply_tokens(count: int) -> list[str]:
    """The fixed reply cycled/truncated to ``count`` tokens; later cycles start with a space."""
    size = len(REPLY_TOKENS)
    tokens = [REPLY_TOKENS[i % size] for i in range(count)]
    for start in range(size, count, size):
        tokens[start] = " " + tokens[start]
    return tokens


def echo_tokens(text: str) -> list[str]:
    """Split ``text`` into word tokens with their leading whitespace; joined, they give it back."""
    tokens: list[str] = _WORDS.findall(text)
    consumed = sum(map(len, tokens))
    if consumed < len(text):
        if tokens:
            tokens[-1] += text[consumed:]
        else:
            tokens.append(text)
    return tokens


def content_text(content: object) -> str:
    """Text of a message ``content``: a string, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def parse_chat(
    body: dict[str, Any], *, stream_default: bool, prefills: bool = False
) -> ChatRequest:
    """Read a chat body; raises ``ChatRequestError`` when it is not a usable chat request.
    A final assistant message is a turn to continue when the flavour `prefills` (Anthropic)
    or the body says `continue_final_message` (vLLM's OpenAI-compatible server)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ChatRequestError("'messages' must be a list of message objects")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        raise ChatRequestError("'model' must be a string")
    texts = [content_text(m.get("content")) for m in messages]
    texts.append(content_text(body.get("system")))
    users = [t for m, t in zip(messages, texts, strict=False) if m.get("role") == "user"]
    stream = body.get("stream", stream_default)
    options = body.get("stream_options")
    return ChatRequest(
        model=model,
        stream=stream is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        prompt_tokens=max(1, sum(len(t.split()) for t in texts)),
        last_user=users[-1] if users else "",
        tool_name=_first_tool_name(body.get("tools")),
        prefix=_prefix(messages, texts, prefills or body.get("continue_final_message") is True),
    )


def _prefix(messages: list[dict[str, Any]], texts: list[str], continues: bool) -> str | None:
    if continues and messages and messages[-1].get("role") == "assistant":
        return texts[len(messages) - 1]
    return None


def _first_tool_name(tools: object) -> str:
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function", tools[0])
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return DEFAULT_TOOL


def tokens_for(chat: ChatRequest, faults: Faults) -> list[str]:
    """The reply tokens for this request: echoed words, or the fixed reply; asked to continue
    an assistant turn that is the first tokens of it, the rest."""
    tokens = echo_tokens(chat.last_user) if faults.echo else reply_tokens(faults.tokens)
    if chat.prefix:
        return continued(tokens, chat.prefix)
    return tokens


def continued(tokens: list[str], prefix: str) -> list[str]:
    """The tokens after the first N that make `prefix` (as is, or with the trailing whitespace
    a prefill trims); all of them when no N does (a model that ignores the prefix)."""
    joined = ""
    for index, token in enumerate(tokens):
        joined += token
        if prefix in (joined, joined.rstrip()):
            return tokens[index + 1 :]
    return tokens
