"""Stream events passed from an upstream job to the HTTP handler through a request's relay.

Both `providers` (which produce them) and `actors` (which route them) import this module; it
imports nothing of the project.
"""

from __future__ import annotations

from typing import Literal

import msgspec

FailureReason = Literal[
    "timeout",
    "first_chunk_timeout",
    "rate_limited",
    "server_error",
    "connect_error",
    "bad_response",
    "auth_error",
    "model_not_found",  # the provider lacks the model: fall over, its health untouched
]


class Answering(msgspec.Struct, frozen=True, gc=False):
    """An attempt starts: who answers from here on (a later one replaces it, after a fallback
    that happened before anything was relayed). `attempt` counts from 1."""

    provider: str
    model: str
    attempt: int


CacheResult = Literal["hit", "miss", "bypass"]


class CacheStatus(msgspec.Struct, frozen=True, gc=False):
    """How the response cache answers this request, sent first (only when the cache is on):
    `hit` (a stored answer, or an identical request's answer in flight), `miss` (this request
    goes upstream), `bypass` (not looked up: not cacheable, asked not to, or the store is away).
    A later one replaces it (a coalesced request routed on its own after its leader failed)."""

    result: CacheResult


class Chunk(msgspec.Struct, frozen=True, gc=False):
    """A piece of generated text, in arrival order."""

    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, gc=False):
    """A piece of a tool call: the first piece of call `index` has its id and name, later pieces
    carry more of its JSON `arguments` (a whole answer gives each call in one piece)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Thinking(msgspec.Struct, frozen=True, gc=False):
    """A piece of the model's reasoning as Anthropic shows it (a `thinking` content block):
    more of block `index`'s text, or its `signature` (which the client sends back with the
    block in a later turn), or `redacted`, the whole data of a `redacted_thinking` block.
    Only Anthropic's API shows these; the other formats leave them out."""

    index: int
    text: str = ""
    signature: str = ""
    redacted: str | None = None


class Embeddings(msgspec.Struct, frozen=True):
    """An embeddings answer: one vector per input, in the inputs' order."""

    vectors: list[list[float]]


class Finish(msgspec.Struct, frozen=True, gc=False):
    """The model stopped, and why (OpenAI's `finish_reason` vocabulary: stop, length,
    tool_calls, content_filter); the stream may still carry usage before its end marker."""

    reason: str


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token counts. `prompt_tokens` and `completion_tokens` are the seed's totals: the prompt
    with its cache reads and writes, the completion with its reasoning. The kinds billed apart
    are given beside them (`input` and `output` are what is left). An adapter may report usage
    in several cumulative pieces (Anthropic sends input tokens first, output tokens last);
    `merge` keeps the largest count of each kind. `estimated`: counted here from the text
    relayed, the provider having said nothing (a stream cut or abandoned)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_input: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write: int = 0  # of prompt_tokens: written to the provider's prompt cache
    reasoning: int = 0  # of completion_tokens: the model's reasoning, billed as output
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def input(self) -> int:
        """Prompt tokens at the input price (neither read from nor written to a cache)."""
        return max(self.prompt_tokens - self.cached_input - self.cache_write, 0)

    @property
    def output(self) -> int:
        """Completion tokens other than reasoning."""
        return max(self.completion_tokens - self.reasoning, 0)

    def merge(self, other: Usage) -> Usage:
        return Usage(
            max(self.prompt_tokens, other.prompt_tokens),
            max(self.completion_tokens, other.completion_tokens),
            max(self.cached_input, other.cached_input),
            max(self.cache_write, other.cache_write),
            max(self.reasoning, other.reasoning),
            self.estimated or other.estimated,
        )


class Continued(msgspec.Struct, frozen=True, gc=False):
    """A stream cut mid-text goes on with another deployment's continuation of its text
    (CONTINUE_ON_CUT): a stream shows it as an SSE comment line, which clients ignore."""

    from_provider: str
    to_provider: str
    model: str = ""  # what the continuing deployment is asked for
    attempt: int = 0  # the continuation's attempt number (as in `Answering`)


class Done(msgspec.Struct, frozen=True, gc=False):
    """The answer is complete."""

    finish_reason: str | None = "stop"


class Failed(msgspec.Struct, frozen=True, gc=False):
    """The request failed; `status` is the HTTP status the client gets if nothing was sent yet."""

    status: int
    type: str
    message: str
    retry_after: float | None = None
    param: str | None = None  # the request parameter at fault, when one is
    # Whether the same request may succeed if sent again (None: the status decides).
    retryable: bool | None = None


Event = (
    Answering
    | CacheStatus
    | Chunk
    | ToolCallDelta
    | Thinking
    | Embeddings
    | Finish
    | Usage
    | Continued
    | Done
    | Failed
)


class UpstreamFailure(Exception):
    """One attempt against one provider failed, classified by `reason`.

    `reason` is None for a client error that the upstream rejected (400/404/422): it goes back to
    the client unchanged in meaning and counts against no provider.
    """

    def __init__(
        self,
        reason: FailureReason | None,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after
