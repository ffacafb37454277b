"""Raw HTTP test servers: each test scripts the exact bytes a client sees, request by request.

A script maps the request's number (0-based, counted over the server's whole life) to actions:
bytes to write, a float to sleep that many seconds, or CLOSE to end the connection. The server
records what it received, on which connection, from which peer, so tests can assert reuse, and
lets a test wait for the moment a connection ends (`ended`).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import zlib
from collections.abc import Callable, Sequence

CLOSE = None
Action = bytes | float | None
Script = Callable[[int], Sequence[Action]]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


def ok(body: bytes | str, *headers: str, status: str = "200 OK") -> bytes:
    """A keep-alive response with a Content-Length."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(data)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def chunked(*pieces: bytes, trailers: str = "") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return head + body + b"0\r\n" + trailers.encode() + b"\r\n"


def encoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        packed = gzip.compress(body)
    elif encoding == "deflate":  # RFC 9110: the zlib format
        packed = zlib.compress(body)
    else:  # "raw deflate": what some servers send under the name deflate
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = compressor.compress(body) + compressor.flush()
        encoding = "deflate"
    return ok(packed, f"Content-Encoding: {encoding}")


class Received:
    __slots__ = ("body", "connection", "head", "peer")

    def __init__(self, connection: int, head: bytes, body: bytes, peer: str) -> None:
        self.connection = connection
        self.head = head
        self.body = body
        self.peer = peer

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class ScriptedServer:
    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        allow_peer: str | None = None,
    ) -> None:
        self.script = script
        self.host = host
        self.tls = tls
        self.allow_peer = allow_peer  # when set, connections from any other address are cut
        self.received: list[Received] = []
        self.connections = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ends: dict[int, asyncio.Event] = {}

    async def ended(self, connection: int) -> None:
        """Return once connection number `connection` (1-based, in accept order) has ended."""
        await self._ends.setdefault(connection, asyncio.Event()).wait()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, host: str | None = None, path: str = "") -> str:
        name = host or self.host
        shown = f"[{name}]" if ":" in name else name
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}{path}"

    async def start(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")[0]
        number = 0  # this connection's, once accepted
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.allow_peer is not None and peer != self.allow_peer:
                self.refused += 1
                return
            self.connections += 1
            number = self.connections
            while True:
                try:
                    head, body = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                index = len(self.received)
                self.received.append(Received(number, head, body, peer))
                if not await self._act(self.script(index), writer):
                    return
        except asyncio.CancelledError:
            return  # the test is over (close): end quietly, the server's own callback logs errors
        finally:
            writer.close()
            self._tasks.discard(task)
            if number:
                self._ends.setdefault(number, asyncio.Event()).set()

    @staticmethod
    async def _act(actions: Sequence[Action], writer: asyncio.StreamWriter) -> bool:
        for action in actions:
            if action is CLOSE:
                return False
            if isinstance(action, float):
                await asyncio.sleep(action)
                continue
            writer.write(action)
            try:
                await writer.drain()
            except ConnectionError:
                return False
        return True
