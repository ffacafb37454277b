"""One upstream response: its status, headers on demand, and a bounded, decoded body.

A whole body (`read`) is bounded after decompression: past `max_body` bytes the read fails with
`BadResponse` without inflating the rest. A streamed body (`iter_body`) is inflated in pieces of
at most `STEP` bytes, so a small compressed piece cannot turn into a large allocation; bounding a
stream's single event is the framer's job.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from modelrouter.transport.connection import HIGH_WATER, BadResponse, Connection

if TYPE_CHECKING:
    from modelrouter.transport.pool import Pool

STEP = HIGH_WATER


class Decoder:
    """Content-Encoding gzip or deflate (zlib-wrapped, or raw as some servers send it)."""

    __slots__ = ("_inflate", "_raw_ok")

    def __init__(self, encoding: bytes) -> None:
        name = encoding.strip().lower()
        self._raw_ok = name == b"deflate"
        if name in (b"gzip", b"x-gzip"):
            self._inflate: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self._raw_ok:
            self._inflate = None  # zlib or raw: decided by the first two bytes
        else:
            raise BadResponse(f"unsupported Content-Encoding {name.decode('latin-1')!r}")

    def decode(self, data: bytes, limit: int) -> bytes:
        """Inflate `data` into at most `limit` bytes; the rest waits in `pending`."""
        inflate = self._inflate
        if inflate is None:
            zlib_header = (
                len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            )
            wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
            inflate = self._inflate = zlib.decompressobj(wbits)
        try:
            out = inflate.decompress(data, limit)
        except zlib.error as exc:
            raise BadResponse(f"malformed compressed body: {exc}") from None
        if inflate.eof and inflate.unused_data:
            raise BadResponse("data after the end of the compressed body")
        return out

    def pending(self) -> bytes:
        return self._inflate.unconsumed_tail if self._inflate is not None else b""

    def finish(self) -> None:
        if self._inflate is not None and not self._inflate.eof:
            raise BadResponse("compressed body ended early")


class Response:
    """One response; read it whole (`read`) or piece by piece (`iter_body`), then `release`."""

    __slots__ = ("_conn", "_decoder", "_pool", "raw_headers", "status")

    def __init__(self, pool: Pool, conn: Connection, headers: list[tuple[bytes, bytes]]) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status = conn.status
        self.raw_headers = headers  # decoded only on demand: most responses need none
        encoding = conn.encoding
        plain = encoding is None or encoding.strip().lower() in (b"", b"identity")
        self._decoder = None if plain else Decoder(encoding)  # type: ignore[arg-type]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower().encode()
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def redirect_host(self) -> str | None:
        """For a 3xx, the host its Location points at (ours when relative); else None."""
        if not 300 <= self.status < 400:
            return None
        location = self.header("location")
        if not location:
            return "nowhere (no Location)"
        try:
            host = urlsplit(location.strip()).hostname
        except ValueError:
            return "a malformed Location"
        return host or self._pool.host

    async def iter_body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None
        decoder = self._decoder
        while (piece := await conn.next_body()) is not None:
            if decoder is None:
                yield piece
                continue
            yield decoder.decode(piece, STEP)
            while tail := decoder.pending():
                yield decoder.decode(tail, STEP)
        if decoder is not None:
            decoder.finish()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; with `limit`, at most that many bytes (the rest is left unread).

        Without `limit` the body is bounded by the pool's `max_body`: past it, BadResponse.
        """
        # A plain loop, not `iter_body`: an async generator per response cost more than the
        # rest of this method, and a whole answer nearly always is one piece.
        conn = self._conn
        assert conn is not None
        decoder = self._decoder
        bound = self._pool.max_body if limit is None else limit
        parts: list[bytes] = []
        size = 0
        while (piece := await conn.next_body()) is not None:
            if decoder is not None:
                piece = decoder.decode(piece, bound - size + 1)  # one byte past: "too large"
            parts.append(piece)
            size += len(piece)
            if limit is not None and size >= limit:
                break
            if size > bound:
                raise BadResponse(f"upstream body larger than {bound} bytes")
        else:
            if decoder is not None:
                decoder.finish()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return body if limit is None else body[:limit]

    def release(self) -> None:
        """Hand the connection back; the pool decides whether it can serve another request."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.give_back(conn)
