"""Stream events passed from an upstream job to the HTTP handler through a request's relay.

Both `providers` (which produce them) and `actors` (which route them) import this module; it
imports nothing of the project.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

FailureReason = Literal[
    "timeout",
    "first_chunk_timeout",
    "rate_limited",
    "server_error",
    "connect_error",
    "bad_response",
    "auth_error",
]

RETRYABLE_REASONS: Final[frozenset[str]] = frozenset(
    {
        "timeout",
        "first_chunk_timeout",
        "rate_limited",
        "server_error",
        "connect_error",
        "bad_response",
        "auth_error",
    }
)


class Chunk(msgspec.Struct, frozen=True, gc=False):
    """A piece of generated text, in arrival order."""

    text: str


class Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Done(msgspec.Struct, frozen=True, gc=False):
    """The answer is complete."""

    finish_reason: str | None = "stop"


class Failed(msgspec.Struct, frozen=True, gc=False):
    """The request failed; `status` is the HTTP status the client gets if nothing was sent yet."""

    status: int
    type: str
    message: str
    retry_after: float | None = None


Event = Chunk | Usage | Done | Failed


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
