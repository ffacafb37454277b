"""Incremental framing of upstream streams: Server-Sent Events and newline-delimited JSON.

Both accept bytes as they arrive (a line may be split across reads, lines may end in CRLF, the last
line may lack its newline) and return complete payloads.
"""

from __future__ import annotations

from typing import Protocol

MAX_LINE_BYTES = 4 * 1024 * 1024  # a single upstream line larger than this is a malformed stream


class FramingError(ValueError):
    pass


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...


class _Lines:
    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def split(self, data: bytes) -> list[bytes]:
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(data) > MAX_LINE_BYTES and max(len(line) for line in (*lines, self._partial)) > (
            MAX_LINE_BYTES
        ):
            raise FramingError("upstream line exceeds the size limit")
        return lines

    def rest(self) -> bytes:
        rest, self._partial = self._partial, b""
        return rest


class SSEFramer:
    """Yields the `data` of each event (multi-line data joined with `\\n`); comments are skipped."""

    __slots__ = ("_data", "_lines", "_size")

    def __init__(self) -> None:
        self._lines = _Lines()
        self._data: list[bytes] = []
        self._size = 0  # bytes of data lines waiting for the blank line that ends their event

    def feed(self, data: bytes) -> list[bytes]:
        return self._events(self._lines.split(data))

    def finish(self) -> list[bytes]:
        events = self._events([self._lines.rest(), b""])
        self._data = []
        self._size = 0
        return events

    def _events(self, lines: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        pending = self._data
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if pending:
                    out.append(pending[0] if len(pending) == 1 else b"\n".join(pending))
                    pending = self._data = []
                    self._size = 0
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                pending.append(value[1:] if value.startswith(b" ") else value)
                self._size += len(value)
                if self._size > MAX_LINE_BYTES:
                    raise FramingError("upstream event exceeds the size limit")
            # Comments (":..."), "event:", "id:" and "retry:" carry nothing we route on.
        return out


class NDJSONFramer:
    """Yields each non-empty line."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = _Lines()

    def feed(self, data: bytes) -> list[bytes]:
        return [_strip_cr(line) for line in self._lines.split(data) if line.strip()]

    def finish(self) -> list[bytes]:
        rest = self._lines.rest()
        return [_strip_cr(rest)] if rest.strip() else []


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line
