"""A keep-alive connection pool to one origin, direct or through a forward proxy.

A request is two steps: `checkout` (an idle connection, or a new one opened within the connect
timeout) and `exchange` (write the request, wait for the status line); `request` does both.
Requests are written in one `transport.write` (a pre-encoded header block plus the per-request
lines); idle connections are reused last-in first-out. A connection comes back only through
`give_back`, and only when `Connection.reusable` says its response was parsed to the end with
nothing unread: that one check is what keeps an answer from ever reaching another request.

The pool counts its active (checked-out, or opening) connections and is bounded by
`max_connections`, active and idle together: at the cap, with no idle connection to reuse,
`checkout` raises PoolFull at once. Idle connections past `idle_timeout` are closed by one
sweep timer per pool, wherever they sit in the idle list (it is ordered by the time they went
idle, so the expired ones are always at its bottom).

A request is never sent twice, except in the keep-alive race: a reused connection that the
server closed without a byte of answer within `race_window` of the write (counted from the
checkout, which is no later). The server closed an idle connection as our request crossed it,
and the request was never read. Any later close
may come after the upstream started (and billed) the work, so it is raised, never resent.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from modelrouter.transport.connection import BadResponse, Connection, ConnectionLost
from modelrouter.transport.dial import ConnectTimeout, dial
from modelrouter.transport.proxy import Proxy, ProxyError
from modelrouter.transport.response import Response
from modelrouter.transport.tls import tls_context

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": kept as written, the rest quoted


class PoolFull(Exception):
    """Every connection the pool may hold is in use: try another deployment.

    Deliberately not an OSError: the upstream did nothing wrong, and an OSError would be
    read as `connect_error` and blacklist it."""


class Pool:
    def __init__(
        self,
        base_url: str,
        *,
        idle_timeout: float = 15.0,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        race_window: float = 0.25,
        ssl_context: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        user_agent: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        host = parts.hostname
        self.host = host if host.isascii() else host.encode("idna").decode("ascii")
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = quote(parts.path.rstrip("/"), safe=_PATH_SAFE)
        shown = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        default_port = self.port == (443 if self.tls else 80)
        self.authority = shown if default_port else f"{shown}:{self.port}"
        if max_connections < 1 or connect_timeout <= 0 or idle_timeout <= 0 or race_window < 0:
            raise ValueError("pool bounds must be positive")
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout  # the default of checkout's own argument
        self.race_window = race_window
        self.max_body = max_body
        self.user_agent = user_agent
        self.proxy = proxy
        self._absolute = proxy is not None and not self.tls  # plain http through a proxy
        self._origin = f"{parts.scheme}://{self.authority}"
        self._basic: str | None = None  # Authorization from the URL's user:password
        if parts.username is not None or parts.password is not None:
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            self._basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._ssl = (ssl_context or tls_context()) if self.tls else None
        self._idle: list[Connection] = []  # oldest first: the top (end) is reused first
        self._active = 0  # lent out or opening; every one of them ends in give_back
        self._sweep: asyncio.TimerHandle | None = None  # set while any connection is idle
        self._closed = False

    def header_block(
        self, method: str, path: str, headers: Mapping[str, str], *, url: str | None = None
    ) -> bytes:
        """The constant part of a request's head, encoded once per adapter. `url`: another
        endpoint of the same origin (an adapter's embeddings), whose path replaces the pool's."""
        prefix = self.prefix
        if url is not None:
            prefix = quote(urlsplit(url).path.rstrip("/"), safe=_PATH_SAFE)
        target = f"{prefix}{path}" or "/"
        if self._absolute:
            target = self._origin + target
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}"]
        given = {name.lower() for name in headers}
        if self.user_agent is not None and "user-agent" not in given:
            lines.append(f"User-Agent: {self.user_agent}")
        if self._basic is not None and "authorization" not in given:
            lines.append(f"Authorization: {self._basic}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        block = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        if self._absolute:
            assert self.proxy is not None
            block += self.proxy.authorization
        return block

    async def request(
        self, head: bytes, body: bytes, extra: bytes = b"", *, connect_timeout: float | None = None
    ) -> Response:
        """`checkout` then `exchange`: returns once the status line arrived."""
        conn = await self.checkout(connect_timeout=connect_timeout)
        return await self.exchange(conn, head, body, extra, connect_timeout=connect_timeout)

    async def checkout(self, *, connect_timeout: float | None = None) -> Connection:
        """An idle connection, or a new one opened within `connect_timeout` seconds (default:
        the pool's). Raises PoolFull at once at the cap, ConnectTimeout, or another OSError.

        The connection counts as active until it is handed to `exchange` (which owns it from
        then on) or to `give_back`."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                loop = conn.loop
                now = loop.time() if loop is not None else 0.0
                if now - conn.idle_since < self.idle_timeout:
                    conn.lent = True
                    conn.reused_at = now  # the race window's start (see exchange)
                    self._active += 1
                    return conn
                # Ordered by idle time: the ones below the top expired before it did.
                self._drop_idle(len(idle))
            conn.close()
        if self._active >= self.max_connections:
            raise PoolFull(f"{self.authority}: all {self.max_connections} connections in use")
        return await self._open(connect_timeout)

    async def exchange(
        self,
        conn: Connection,
        head: bytes,
        body: bytes,
        extra: bytes = b"",
        *,
        connect_timeout: float | None = None,
    ) -> Response:
        """Send `head` + `extra` header lines + body on `conn` (from `checkout`); returns once
        the status line arrived. On any failure `conn` is closed and given back; a request lost
        to the keep-alive race is sent once more on a new connection (within `connect_timeout`).
        """
        message = b"".join((head, extra, b"Content-Length: %d\r\n\r\n" % len(body), body))
        try:
            conn.send(message)
            headers = await conn.headers()
        except ConnectionLost:
            self.give_back(conn)  # incomplete: closed, and counted out
            if not self._raced(conn):
                raise
            # A new connection, never an idle one (they may be as stale as the one just lost).
            # The lost one was counted out just now, with no await since: the cap holds.
            fresh = await self._open(connect_timeout)
            return await self._exchange(fresh, message)
        except BaseException:
            self.give_back(conn)
            raise
        return self._response(conn, headers)

    def _raced(self, conn: Connection) -> bool:
        """Whether `conn` was lost to the keep-alive race: kept alive, closed with no byte of
        answer, within `race_window` of its checkout. (The window counts from the checkout,
        which is no later than the write: an error can only be on the side of not resending,
        and the clock is read once per request, at the checkout.)"""
        loop = conn.loop
        if conn.reused_at < 0 or conn.received_anything or loop is None:
            return False
        return loop.time() - conn.reused_at <= self.race_window

    async def _exchange(self, conn: Connection, message: bytes) -> Response:
        try:
            conn.send(message)
            headers = await conn.headers()
        except BaseException:
            self.give_back(conn)  # incomplete: closed, and counted out
            raise
        return self._response(conn, headers)

    def _response(self, conn: Connection, headers: list[tuple[bytes, bytes]]) -> Response:
        if self._absolute and conn.status == 407:
            conn.close()  # never reused: the proxy wants credentials we do not have
            self.give_back(conn)
            assert self.proxy is not None
            raise ProxyError(f"proxy {self.proxy.label} refused the request: 407 (credentials)")
        return Response(self, conn, headers)

    async def _open(self, connect_timeout: float | None) -> Connection:
        self._active += 1  # reserved before the await: the cap holds while connecting
        try:
            conn = await dial(
                self.host,
                self.port,
                ssl_context=self._ssl,
                proxy=self.proxy,
                timeout=self.connect_timeout if connect_timeout is None else connect_timeout,
            )
        except BaseException:
            self._active -= 1
            raise
        conn.lent = True
        return conn

    @property
    def active(self) -> int:
        """Connections checked out (serving a request) or being opened."""
        return self._active

    @property
    def saturated(self) -> bool:
        """Whether a checkout could fail with PoolFull: every connection allowed is active.
        (Idle connections do not count: a checkout reuses them.)"""
        return self._active >= self.max_connections

    @property
    def idle(self) -> int:
        """Connections waiting in the pool for their next request."""
        return len(self._idle)

    def give_back(self, conn: Connection) -> None:
        """The only way back into the pool (see `Connection.reusable`); a connection that
        cannot serve again is closed. Giving one back twice is harmless."""
        if not conn.lent:
            return
        conn.lent = False
        self._active -= 1
        if self._closed or not conn.reusable:
            conn.close()
            return
        loop = conn.loop
        assert loop is not None  # set when the connection was made
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.idle_since + self.idle_timeout, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The sweep: close every idle connection past `idle_timeout` (or already closed),
        then wait for the next one to expire."""
        self._sweep = None
        now = loop.time()
        kept: list[Connection] = []
        for conn in self._idle:
            if conn.usable and now - conn.idle_since < self.idle_timeout:
                kept.append(conn)
            else:
                conn.close()
        self._idle[:] = kept
        if kept:
            self._sweep = loop.call_at(kept[0].idle_since + self.idle_timeout, self._expire, loop)

    def _drop_idle(self, count: int) -> None:
        """Close the `count` oldest idle connections."""
        for conn in self._idle[:count]:
            conn.close()
        del self._idle[:count]

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            self._idle.pop().close()


__all__ = ["BadResponse", "ConnectTimeout", "ConnectionLost", "Pool", "PoolFull", "Response"]
