"""A keep-alive connection pool to one origin, direct or through a forward proxy.

Requests are written in one `transport.write` (a pre-encoded header block plus the per-request
lines); idle connections are reused last-in first-out and dropped after `idle_timeout`. A
connection comes back only through `give_back`, and only when `Connection.reusable` says its
response was parsed to the end with nothing unread: that one check is what keeps an answer from
ever reaching another request.

A request that fails on a reused connection before any response byte arrived is retried once
on a fresh connection: that is the keep-alive race where the server closed an idle connection,
and the request was never read.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from modelrouter.transport.connection import BadResponse, Connection, ConnectionLost
from modelrouter.transport.proxy import Proxy, ProxyError, open_tunnel
from modelrouter.transport.response import Response
from modelrouter.transport.tls import tls_context

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": kept as written, the rest quoted


class Pool:
    def __init__(
        self,
        base_url: str,
        *,
        idle_timeout: float = 15.0,
        max_idle: int = 256,
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
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
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
        self._idle: list[Connection] = []
        self._closed = False

    def header_block(self, method: str, path: str, headers: Mapping[str, str]) -> bytes:
        """The constant part of a request's head, encoded once per adapter."""
        target = f"{self.prefix}{path}" or "/"
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
        if self._absolute and conn.status == 407:
            conn.close()
            assert self.proxy is not None
            raise ProxyError(f"proxy {self.proxy.label} refused the request: 407 (credentials)")
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
        return await self._open(), False

    async def _open(self) -> Connection:
        proxy = self.proxy
        if proxy is not None:
            if self._ssl is not None:
                return await open_tunnel(proxy, self.host, self.port, self._ssl)
            _, conn = await proxy.connect(Connection)
            return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            Connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self.tls else None,
        )
        return conn

    @property
    def idle(self) -> int:
        """Connections waiting in the pool for their next request."""
        return len(self._idle)

    def give_back(self, conn: Connection) -> None:
        """The only way back into the pool (see `Connection.reusable`)."""
        if self._closed or not conn.reusable or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = (conn.loop or asyncio.get_running_loop()).time()
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


__all__ = ["BadResponse", "ConnectionLost", "Pool", "Response"]
