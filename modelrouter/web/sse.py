"""Server-Sent Events: the seed's `/stream` encoding, and the format every stream writes in."""

from __future__ import annotations

import re
from typing import Protocol

from modelrouter.events import Answering, Chunk, Done, Event, Failed
from modelrouter.web.errors import SEED_ERRORS

DONE = b"data: [DONE]\n\n"
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


_MARKER = "[DONE]"
# A line that reads `[DONE]`, give or take spaces (clients often strip): matched up to `[DON`.
_MARKER_LINE = re.compile(r"(?:^|(?<=\n))[^\S\n]*\[DON(?=E\][^\S\n]*(?:\n|$))")


def data_event(text: str) -> bytes:
    """One event; text with line breaks becomes several `data:` lines, as the SSE spec requires.

    Text with a line that reads `[DONE]` (a model may well write it; spaces around it count
    too, as clients often strip them) is sent as two events, cut inside the marker, so that the
    only `data: [DONE]` line is the real end: a client that stops there (the seed's protocol)
    gets the whole answer, and joining the events' data gives the text back."""
    if _MARKER in text:
        return _split_markers(text)
    return _event(text)


def _event(text: str) -> bytes:
    if "\n" not in text and "\r" not in text:
        return b"data: " + text.encode() + b"\n\n"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f"data: {line}\n" for line in lines).encode() + b"\n"


def _split_markers(text: str) -> bytes:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cuts = [m.end() for m in _MARKER_LINE.finditer(text)]  # just after each marker's `[DON`
    if not cuts:
        return _event(text)
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return b"".join(_event(piece) for piece in pieces)


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
