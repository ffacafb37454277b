"""Server-Sent Events: the seed's `/stream` encoding, and the format every stream writes in."""

from __future__ import annotations

from typing import Protocol

from modelrouter.events import Answering, Chunk, Done, Event, Failed
from modelrouter.web.errors import SEED_ERRORS

DONE = b"data: [DONE]\n\n"
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


def data_event(text: str) -> bytes:
    """One event; text with line breaks becomes several `data:` lines, as the SSE spec requires."""
    if "\n" not in text and "\r" not in text:
        return b"data: " + text.encode() + b"\n\n"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f"data: {line}\n" for line in lines).encode() + b"\n"


class StreamFormat(Protocol):
    """How one streamed response writes the relay's events (one object per request)."""

    def start(self, answering: Answering) -> bytes:
        """Bytes sent first, once the answering provider is known."""

    def event(self, event: Event) -> bytes:
        """One event's bytes (empty for an event the format does not show); a `Failed` event
        is the `event: error` that cuts the stream."""


class SeedStream:
    """`/stream`: `data: <text>` per chunk, then `data: [DONE]`, or an `event: error`."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def start(self, answering: Answering) -> bytes:  # noqa: ARG002 - the seed format has no header
        return b""

    def event(self, event: Event) -> bytes:
        kind = type(event)
        if kind is Chunk:
            return data_event(event.text)  # type: ignore[union-attr]
        if kind is Done:
            return DONE
        if kind is Failed:
            return SEED_ERRORS.stream_error(event, self.request_id)  # type: ignore[arg-type]
        return b""
