"""Server-Sent Events encoding for `/stream` (the seed's format: `data: <text>` per chunk)."""

from __future__ import annotations

from modelrouter.schemas import ErrorBody, json_encoder

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


def error_event(type_: str, message: str, request_id: str) -> bytes:
    body = json_encoder.encode(ErrorBody(type_, message, request_id))
    return b"event: error\ndata: " + body + b"\n\n"
