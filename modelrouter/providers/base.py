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
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import msgspec

from modelrouter.config import ProviderSettings
from modelrouter.events import Embeddings, Event, Thinking, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers.framing import Framer, NDJSONFramer, SSEFramer
from modelrouter.redact import Redactor
from modelrouter.schemas import ChatRequest, CountChat, EmbedChat, Message, Operation, ToolCall

T = TypeVar("T")
MAX_ERROR_BODY = 64 * 1024  # bytes of an upstream error body read (the rest is not)
MAX_ERROR_TEXT = 500  # characters of it kept in a message


class Completion(msgspec.Struct, frozen=True):
    text: str
    usage: Usage
    finish_reason: str | None = "stop"
    tool_calls: list[ToolCallDelta] = []  # each call whole, in one piece
    thinking: list[Thinking] = []  # each block whole (Anthropic's), before the text


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


class Refusal(NamedTuple):
    """A request parameter an adapter cannot honour, and why (the client reads it when no
    other candidate can serve the request either)."""

    param: str  # OpenAI's name for it
    why: str = ""

    def __str__(self) -> str:
        return f"{self.param} ({self.why})" if self.why else self.param


class Adapter(ABC):
    """One provider. Subclasses set `framing` and implement the three `map_*` functions."""

    framing: ClassVar[Literal["sse", "ndjson"]]
    capabilities: ClassVar[frozenset[str]] = frozenset()  # names from FEATURES it honours
    # Whether the request target depends on the model and the stream flag (`path`): most
    # providers have one URL, so the request head is encoded once; Azure puts the deployment
    # in the path, Gemini the model and the method.
    model_in_path: bool = False
    # The client API whose requests this upstream takes as they are (`NativeChat.native.api`):
    # such a request is passed through, not mapped, and nothing in it is refused here.
    api: ClassVar[str | None] = None
    # Embeddings: whether this kind takes arrays of token ids, and which optional fields.
    embeds_tokens: ClassVar[bool] = False
    embed_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.model = settings.model
        self.base_url = settings.base_url
        self.url = self.endpoint(settings.base_url)
        # The endpoints of operations other than chat (same origin as `url`): none, one or both.
        self.endpoints: dict[Operation, str] = {}
        for operation, url in (
            ("embed", self.embed_endpoint(settings.base_url)),
            ("count", self.count_endpoint(settings.base_url)),
        ):
            if url is not None:
                self.endpoints[operation] = url  # type: ignore[index]
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

    def embed_endpoint(self, base_url: str) -> str | None:  # noqa: ARG002 - for subclasses
        """The embeddings endpoint (same origin as `url`), or None when the kind has none."""
        return None

    def count_endpoint(self, base_url: str) -> str | None:  # noqa: ARG002 - for subclasses
        """The endpoint counting a request's input tokens, or None when the kind has none."""
        return None

    def map_operation(self, request: ChatRequest, model: str) -> bytes:
        """The upstream body of a request other than chat (its `operation`)."""
        if request.operation == "embed":
            return self.map_embed_request(request, model)  # type: ignore[arg-type]
        return self.map_count_request(request, model)  # type: ignore[arg-type]

    def map_operation_response(self, operation: Operation, body: bytes) -> list[Event]:
        """The events of an operation's whole answer: embeddings then their usage, or a
        count as the usage's prompt tokens."""
        if operation == "embed":
            vectors, usage = self.map_embed_response(body)
            return [Embeddings(vectors), usage]
        return [Usage(self.map_count_response(body))]

    def map_count_request(self, request: CountChat, model: str) -> bytes:
        """The upstream body of a count (for kinds with `count_endpoint`)."""
        raise NotImplementedError

    def map_count_response(self, body: bytes) -> int:
        """The input tokens counted."""
        raise NotImplementedError

    def map_embed_request(self, request: EmbedChat, model: str) -> bytes:
        """The upstream body of an embeddings request (for kinds with `embed_endpoint`)."""
        raise NotImplementedError

    def map_embed_response(self, body: bytes) -> tuple[list[list[float]], Usage]:
        """The vectors, in the inputs' order, and the usage."""
        raise NotImplementedError

    def embed_refusals(self, request: EmbedChat) -> list[Refusal]:
        """What of an embeddings request this deployment cannot take (planning skips it)."""
        if "embed" not in self.endpoints:
            return [Refusal("model", "this kind of deployment serves no embeddings")]
        refused: list[Refusal] = []
        if request.embed.tokens is not None and not self.embeds_tokens:
            refused.append(Refusal("input", "token arrays"))
        if request.embed.dimensions is not None and "dimensions" not in self.embed_fields:
            refused.append(Refusal("dimensions"))
        if request.user is not None and "user" not in self.embed_fields:
            refused.append(Refusal("user"))
        return refused

    def error_text(self, body: bytes) -> str | None:  # noqa: ARG002 - for subclasses
        """The human part of an upstream error body, where its shape is known (overridden);
        None: the body is shown as it is."""
        return None

    def path(self, model: str, *, stream: bool) -> str:  # noqa: ARG002 - one signature for all
        """What follows `url`'s path in the request target, for adapters with `model_in_path`
        (percent-encoded here: a model name is the client's text)."""
        return ""

    def operation_path(self, operation: Operation, model: str) -> str:  # noqa: ARG002 - for subclasses
        """What follows the operation's endpoint path in the request target, for adapters with
        `model_in_path` (Azure's deployment, Gemini's model and method), percent-encoded here."""
        return ""

    def request_headers(self, request: ChatRequest) -> bytes:  # noqa: ARG002 - for subclasses
        """Header lines (each ending in CRLF) a request of a client API adds to the adapter's
        own (Anthropic's allowed beta headers); asked only for a `NativeChat`."""
        return b""

    def stream_mapper(self) -> Callable[[bytes], list[Event]]:
        """`map_chunk` for one stream: an adapter whose events depend on earlier payloads of
        the same stream (Gemini numbers tool calls across them) returns a fresh one per stream."""
        return self.map_chunk

    def retry_after(self, header: Callable[[str], str | None]) -> float | None:
        """Seconds the upstream asks to wait, from the headers of a non-2xx answer."""
        return parse_retry_after(header("retry-after"))

    def error_message(self, body: bytes) -> str:
        """The human part of an upstream error body (else the body), redacted before it is
        cut to MAX_ERROR_TEXT: a key that an upstream echoes across the cut would otherwise
        escape its pattern, part of it shown. Whatever the body's shape, the same rule."""
        text = self.error_text(body)
        if text is None:
            text = body.decode("utf-8", "replace")
        return self.redact.shorten(text, MAX_ERROR_TEXT).strip()

    def failure(
        self, status: int, body: bytes, retry_after: float | None, redirect_to: str | None = None
    ) -> UpstreamFailure:
        """What a non-2xx answer means (overridden where a provider's status says more);
        `redirect_to`: a 3xx's target host."""
        return classify_status(status, self.error_message(body), retry_after, redirect_to)

    def framer(self) -> Framer:
        return SSEFramer() if self.framing == "sse" else NDJSONFramer()

    def unsupported(self, request: ChatRequest, features: list[str] | None = None) -> list[Refusal]:
        """What in `request` this provider cannot honour: optional features it lacks and, in
        subclasses, values or combinations its documentation rules out. Planning skips a
        candidate that refuses anything, so nothing is clamped or dropped on the way, and no
        upstream 400 reaches a client that another candidate could have served. `features` is
        `requested_features(request)`, given by a caller that asks several adapters."""
        if features is None:
            features = requested_features(request)
        if not features:  # most requests: per candidate, per request
            return []
        capabilities = self.capabilities
        return [Refusal(name) for name in features if name not in capabilities]


_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def call_arguments(call: ToolCall) -> dict[str, Any] | None:
    """A tool call's `arguments` (JSON text in OpenAI's format) as the JSON object that
    providers taking them as an object want; None when the text is not one."""
    try:
        return _decode_object(call.function.arguments or "{}")
    except ValueError:
        return None


def unreadable_arguments(messages: list[Message]) -> list[Refusal]:
    """A refusal if a tool call in the history has arguments that are not a JSON object (a
    provider taking them as an object cannot send them; one taking text can)."""
    for message in messages:
        for call in message.tool_calls or ():
            if call_arguments(call) is None:
                return [Refusal("messages", "tool call arguments that are not a JSON object")]
    return []


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


# How an upstream says its account's billing is exhausted, in an OpenAI-style error's `type`
# or `code`. OpenAI answers a 429 of type `insufficient_quota` (its code the same, null, or
# since 2025 one naming the cause, the type unchanged); servers copying OpenAI's errors send
# the same. Not a rate limit: no wait helps until someone pays or raises a limit.
BILLING_EXHAUSTED = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)


def classify_status(
    status: int,
    message: str,
    retry_after: float | None,
    redirect_to: str | None = None,
    *,
    billing_exhausted: bool = False,
) -> UpstreamFailure:
    """Turn a non-2xx upstream status into a failure of the right class.

    A 3xx is never followed (the key must not go to another host): `redirect_to` names where
    it pointed, and the failure says so. Exhausted billing (`billing_exhausted`, read from the
    body by the adapter, or a 402 Payment Required: OpenRouter's and Anthropic's way to say
    it) is a configuration fault like a refused key, whatever the status: `auth_error`, the
    long blacklist, and the upstream's Retry-After is not kept.
    """
    detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if redirect_to is not None:  # a 3xx: falls through to bad_response below
        detail = f"HTTP {status}: redirect to {redirect_to} not followed"
    if billing_exhausted or status in (401, 402, 403):
        return UpstreamFailure("auth_error", detail, status=status)
    if status == 429:
        return UpstreamFailure("rate_limited", detail, status=status, retry_after=retry_after)
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
