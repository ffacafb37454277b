"""A keep-alive connection pool to one origin and the responses it returns.

Requests are written in one `transport.write` (a pre-encoded header block plus the per-request
lines); idle connections are reused last-in first-out and dropped after `idle_timeout`. A request
that fails on a reused connection before any response byte arrived is retried once on a fresh
connection: that is the keep-alive race where the server closed an idle connection, and the
request was never read.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from modelrouter.transport.connection import BadResponse, Connection, ConnectionLost

_DECODERS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class Response:
    """One response; read it whole (`read`) or piece by piece (`iter_body`), then `release`."""

    __slots__ = ("_conn", "_decoder", "_pool", "raw_headers", "status")

    def __init__(self, pool: Pool, conn: Connection, headers: list[tuple[bytes, bytes]]) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status = conn.status
        self.raw_headers = headers  # decoded only on demand: most responses need none
        encoding = conn.encoding
        wbits = _DECODERS.get(encoding.strip().lower()) if encoding else None
        self._decoder = zlib.decompressobj(wbits) if wbits is not None else None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower().encode()
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def iter_body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None
        while (piece := await conn.next_body()) is not None:
            yield self._decoder.decompress(piece) if self._decoder is not None else piece

    async def read(self, limit: int | None = None) -> bytes:
        # A plain loop, not `iter_body`: an async generator per response cost more than the
        # rest of this method, and a whole answer nearly always is one piece.
        conn = self._conn
        assert conn is not None
        decoder = self._decoder
        parts: list[bytes] = []
        size = 0
        while (piece := await conn.next_body()) is not None:
            if decoder is not None:
                piece = decoder.decompress(piece)
            parts.append(piece)
            size += len(piece)
            if limit is not None and size >= limit:
                break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return body if limit is None else body[:limit]

    def release(self) -> None:
        """Give the connection back when the response was read to its end, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.give_back(conn)


class Pool:
    def __init__(
        self,
        base_url: str,
        *,
        idle_timeout: float = 15.0,
        max_idle: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.tls else 80)
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        self._idle: list[Connection] = []
        self._closed = False

    def header_block(self, method: str, path: str, headers: Mapping[str, str]) -> bytes:
        """The constant part of a request's head, encoded once per adapter."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes, extra: bytes = b"") -> Response:
        """Send `head` + `extra` header lines + body; returns once the status line arrived."""
        message = b"".join((head, extra, b"Content-Length: %d\r\n\r\n" % len(body), body))
        conn, reused = await self._connection()
        try:
            return await self._exchange(conn, message)
        except ConnectionLost:
            if not reused or conn.received_anything:
                raise
        conn, _ = await self._connection(fresh=True)
        return await self._exchange(conn, message)

    async def _exchange(self, conn: Connection, message: bytes) -> Response:
        try:
            conn.send(message)
            headers = await conn.headers()
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, headers)

    async def _connection(self, *, fresh: bool = False) -> tuple[Connection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            loop = conn.loop
            if (
                conn.usable
                and loop is not None
                and loop.time() - conn.idle_since < self.idle_timeout
            ):
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            Connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self.tls else None,
        )
        return conn, False

    @property
    def idle(self) -> int:
        """Connections waiting in the pool for their next request."""
        return len(self._idle)

    def give_back(self, conn: Connection) -> None:
        if self._closed or not conn.complete or not conn.keep_alive or not conn.usable:
            conn.close()
            return
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = (conn.loop or asyncio.get_running_loop()).time()
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


__all__ = ["BadResponse", "ConnectionLost", "Pool", "Response"]
