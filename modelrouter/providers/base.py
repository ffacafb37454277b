"""What every provider adapter is: data (URL, headers, model) plus pure mapping functions.

An adapter knows nothing of routing, limits or metrics. It turns a `ChatRequest` into an upstream
body and an upstream body (whole or streamed) into events, raising `UpstreamFailure` when the
upstream says something it cannot use.
"""

from __future__ import annotations

import email.utils
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

from modelrouter.config import ProviderSettings
from modelrouter.events import Event, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers.framing import Framer, NDJSONFramer, SSEFramer
from modelrouter.redact import Redactor
from modelrouter.schemas import ChatRequest

T = TypeVar("T")
MAX_ERROR_BODY = 64 * 1024  # bytes of an upstream error body read (the rest is not)
MAX_ERROR_TEXT = 500  # characters of it kept in a message


class Completion(msgspec.Struct, frozen=True):
    text: str
    usage: Usage
    finish_reason: str | None = "stop"
    tool_calls: list[ToolCallDelta] = []  # each call whole, in one piece


# OpenAI parameters beyond the seed's (messages, model, max_tokens, temperature, top_p, stop),
# which every adapter honours. An adapter lists in `capabilities` those it can also honour.
FEATURES = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "n",
    "user",
    "presence_penalty",
    "frequency_penalty",
)


def requested_features(request: ChatRequest) -> list[str]:
    """The optional parameters this request sets, by their OpenAI names.

    Tool turns in the conversation need tool support too (they count as `tools`); `n` counts
    only above 1 and `response_format` only when it asks for more than plain text.
    """
    wanted = [name for name in FEATURES if getattr(request, name) is not None]
    if request.n == 1:
        wanted.remove("n")
    if request.response_format is not None and request.response_format.type == "text":
        wanted.remove("response_format")
    if "tools" not in wanted and any(m.role == "tool" or m.tool_calls for m in request.messages):
        wanted.insert(0, "tools")
    return wanted


class Adapter(ABC):
    """One provider. Subclasses set `framing` and implement the three `map_*` functions."""

    framing: ClassVar[Literal["sse", "ndjson"]]
    capabilities: ClassVar[frozenset[str]] = frozenset()  # names from FEATURES it honours

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.model = settings.model
        self.base_url = settings.base_url
        self.url = self.endpoint(settings.base_url)
        # The adapter's own key, and every credential shape: upstream text may echo either.
        self.redact = Redactor([settings.api_key] if settings.api_key else [])
        self.headers = self.auth_headers(settings.api_key) | {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream, application/x-ndjson",
        }

    @abstractmethod
    def endpoint(self, base_url: str) -> str: ...

    @abstractmethod
    def auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    @abstractmethod
    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes: ...

    @abstractmethod
    def map_response(self, body: bytes) -> Completion: ...

    @abstractmethod
    def map_chunk(self, payload: bytes) -> list[Event]:
        """Map one framed stream payload to events; a `Done` event ends the stream."""

    def error_message(self, body: bytes) -> str:
        """The human part of an upstream error body (overridden where the shape is known),
        redacted before it is cut to MAX_ERROR_TEXT: a key that an upstream echoes across the
        cut would otherwise escape its pattern, part of it shown."""
        return self.redact.shorten(body.decode("utf-8", "replace"), MAX_ERROR_TEXT).strip()

    def framer(self) -> Framer:
        return SSEFramer() if self.framing == "sse" else NDJSONFramer()

    def unsupported(self, features: list[str]) -> list[str]:
        """The requested features (see `requested_features`) this adapter cannot honour."""
        return [name for name in features if name not in self.capabilities]


def given(request: ChatRequest, names: Mapping[str, str]) -> dict[str, Any]:
    """The request's fields that are set, under the upstream's names ({ours: theirs})."""
    found: dict[str, Any] = {}
    for ours, theirs in names.items():
        value = getattr(request, ours)
        if value is not None:
            found[theirs] = value
    return found


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    """`stop` as the list that providers without a single-string form expect."""
    return [stop] if isinstance(stop, str) else stop


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from `now` given a Retry-After header in delta-seconds or HTTP-date form."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_status(status: int, message: str, retry_after: float | None) -> UpstreamFailure:
    """Turn a non-2xx upstream status into a failure of the right class."""
    detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 429:
        return UpstreamFailure("rate_limited", detail, status=status, retry_after=retry_after)
    if status in (401, 403):
        return UpstreamFailure("auth_error", detail, status=status)
    if status in (400, 404, 413, 422):
        # The request itself is wrong: the client hears about it, no provider is blamed.
        return UpstreamFailure(None, detail, status=status)
    if status in (408, 504):
        return UpstreamFailure("timeout", detail, status=status, retry_after=retry_after)
    if status >= 500:
        return UpstreamFailure("server_error", detail, status=status, retry_after=retry_after)
    return UpstreamFailure("bad_response", detail, status=status)


def bad_response(what: str) -> UpstreamFailure:
    return UpstreamFailure("bad_response", what)


def decode(decoder: Callable[[bytes], T], data: bytes, what: str) -> T:
    """Decode upstream JSON; anything malformed (bad JSON, invalid UTF-8) is a bad_response."""
    try:
        return decoder(data)
    except ValueError as exc:  # msgspec.DecodeError, or invalid UTF-8 in a string
        raise bad_response(f"malformed {what}: {exc}") from None
