"""One keep-alive HTTP/1.1 connection: an asyncio protocol around httptools' C parser.

Bytes arrive in `data_received`, the parser calls back with the status, headers and decoded body
pieces (chunked transfer is undone by the parser), and the reader takes body pieces as they come.
The read buffer is bounded: past `HIGH_WATER` bytes the transport stops reading until the
consumer catches up, so a slow client pushes back all the way to the upstream socket.

Interim responses (100 Continue, 103 Early Hints, any other 1xx) are skipped; 101 is refused.
Trailers are read and dropped. A body that has neither a length nor chunked framing ends with
the connection. Any byte after the end of the response, while it is read or while the connection
waits in the pool, poisons the connection: it is closed, never reused (`reusable`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

HIGH_WATER = 256 * 1024
MAX_HEAD = 64 * 1024  # status line and headers (1xx included); past it, one more read at most


class ConnectionLost(ConnectionError):
    """The connection closed before the response was complete."""


class BadResponse(ValueError):
    """The upstream sent something that is not a well-formed HTTP/1.1 response."""


class _Unsolicited(Exception):
    """Raised inside the parser to stop it at a response nobody asked for."""


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_buffered",
        "_complete",
        "_error",
        "_head_bytes",
        "_headers",
        "_headers_done",
        "_interim",
        "_paused",
        "_reader",
        "_received",
        "encoding",
        "idle_since",
        "keep_alive",
        "lent",
        "loop",
        "parser",
        "reused_at",
        "status",
        "transport",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self.idle_since = 0.0
        self.lent = False  # checked out of its pool: counted as active until given back
        self.reused_at = -1.0  # when last taken from its pool's idle list; never: -1
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.encoding: bytes | None = None  # Content-Encoding, noted as the headers arrive
        self.keep_alive = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._head_bytes = 0  # bytes received before the headers were complete
        self._interim = False  # parsing a 1xx response, which is not the answer
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._received = False  # any byte of this response arrived
        self._paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()  # once: the call costs a syscall on Python 3.11

    def data_received(self, data: bytes) -> None:
        self._received = True
        if not self._headers_done:
            if self._head_bytes > MAX_HEAD:
                self._fail(BadResponse(f"response head larger than {MAX_HEAD} bytes"))
                return
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Unsolicited):
                self._fail(BadResponse("upstream sent bytes after the end of its response"))
            else:
                self._fail(BadResponse(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._complete:
            return
        if exc is None and self._headers_done and self._error is None and self._until_close():
            self._complete = True  # the body was delimited by the connection closing
            self._wake()
            return
        self._fail(ConnectionLost(str(exc) if exc else "connection closed by upstream"))

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:  # a second response, or stray bytes: no request of ours owns them
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # a trailer (after a chunked body): nothing we route on
        self._headers.append((name, value))
        if len(name) == 16 and name.lower() == b"content-encoding":
            self.encoding = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self._fail(BadResponse("upstream switched protocols (101): refused"))
                raise _Unsolicited  # stops the parser; the failure above is the one reported
            self._interim = True  # 100 Continue, 103 Early Hints...: the answer follows
            self._headers = []
            self.encoding = None
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._wake()

    # -- the consumer's side -------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        """The one test for going back to the pool: this response parsed to its end, no byte
        after it, and both sides willing to keep the connection. (Body pieces parsed but not
        taken by the reader are dropped with the response: they cannot reach the next one.)"""
        return (
            self._complete
            and self.keep_alive
            and self._error is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    @property
    def received_anything(self) -> bool:
        return self._received

    def send(self, data: bytes) -> None:
        self._reset()
        if self.transport is None:  # closed since it was checked out: nothing was written
            raise ConnectionLost("connection closed before the request was written")
        self.transport.write(data)

    async def headers(self) -> list[tuple[bytes, bytes]]:
        while not self._headers_done:
            await self._wait()
        return self._headers

    async def next_body(self) -> bytes | None:
        """The next piece of body (everything buffered, joined), or None at the end."""
        while not self._body:
            if self._complete:
                return None
            await self._wait()
        if len(self._body) == 1:
            piece = self._body.popleft()
        else:
            piece = b"".join(self._body)
            self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return piece

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._reader = (self.loop or asyncio.get_running_loop()).create_future()
        try:
            await self._reader
        finally:
            self._reader = None
        error = self._failure()  # set by a callback while we waited
        if error is not None and not (self._complete or self._body):
            raise error

    def _failure(self) -> Exception | None:
        return self._error

    def _until_close(self) -> bool:
        """Whether this response's body has no framing, so that only the close ends it
        (no Content-Length, and no Transfer-Encoding ending in chunked: RFC 9112, 6.3)."""
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding":
                return not value.rstrip().lower().endswith(b"chunked")
        return True

    def _wake(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        if self.transport is not None:
            self.transport.close()
        self._wake()
