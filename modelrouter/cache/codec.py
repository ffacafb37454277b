"""A stored answer: its events (the answering provider first, the terminal `Done` last),
encoded as compact JSON text for Redis, with the size the stores account for."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from modelrouter.events import (
    Answering,
    Chunk,
    Done,
    Embeddings,
    Event,
    Finish,
    Thinking,
    ToolCallDelta,
    Usage,
)

EVENT_OVERHEAD: Final = 48  # bytes an event costs beyond its text, as the stores count it
_KINDS: Final[dict[type[Any], str]] = {
    Answering: "a",
    Chunk: "c",
    ToolCallDelta: "t",
    Thinking: "k",
    Embeddings: "e",
    Finish: "f",
    Usage: "u",
    Done: "d",
}
_CLASSES: Final = {tag: kind for kind, tag in _KINDS.items()}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[list[Any]]).decode


class BadEntry(ValueError):
    """A stored value that is not an answer this version can replay."""


def event_size(event: Event) -> int:
    kind = type(event)
    if kind is Chunk:
        return EVENT_OVERHEAD + len(event.text)  # type: ignore[union-attr]
    if kind is ToolCallDelta:
        return EVENT_OVERHEAD + len(event.arguments) + 64  # type: ignore[union-attr]
    if isinstance(event, Embeddings):  # about 12 bytes a number, as JSON text
        return EVENT_OVERHEAD + 12 * sum(len(vector) for vector in event.vectors)
    if isinstance(event, Thinking):
        return EVENT_OVERHEAD + len(event.text) + len(event.signature) + len(event.redacted or "")
    return EVENT_OVERHEAD


def encode(events: list[Event]) -> bytes:
    return _encode([[_KINDS[type(e)], *msgspec.structs.astuple(e)] for e in events])


def decode(data: bytes | str) -> list[Event]:
    try:
        rows = _decode(data)
        events: list[Event] = [_CLASSES[row[0]](*row[1:]) for row in rows]
    except (msgspec.DecodeError, KeyError, TypeError, IndexError) as exc:
        raise BadEntry(str(exc)) from None
    if not events or type(events[0]) is not Answering or type(events[-1]) is not Done:
        raise BadEntry("an answer starts with Answering and ends with Done")
    return events
