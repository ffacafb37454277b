"""Opening one upstream connection, in phases, under one connect timeout.

The phases are TCP connect (to the origin, or to the proxy), proxy CONNECT (a tunnel for an
https origin) and TLS handshake. They run under a single `asyncio.timeout` that exists only
while the connection is being opened; when it fires, `ConnectTimeout` names the phase that was
running, so "the proxy is slow" and "the provider's TLS is slow" read differently in a log.
TLS is started on an open TCP connection (`start_tls`) rather than inside `create_connection`,
so the two phases can be told apart; a connection is opened once and then kept alive, so the
extra step costs nothing per request.
"""

from __future__ import annotations

import asyncio
import ssl

from modelrouter.transport.connection import Connection
from modelrouter.transport.proxy import Proxy, open_tunnel


class ConnectTimeout(OSError):
    """Opening a connection (TCP, proxy CONNECT, TLS) took longer than the connect timeout.

    An OSError, so it maps to `connect_error` like any other failure to connect; deliberately
    not a TimeoutError, which callers read as the upstream being slow to *answer*.
    """


class Step:
    """The phase an opening connection is in; updated as it goes, read when the timer fires."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


async def dial(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    proxy: Proxy | None,
    timeout: float,
) -> Connection:
    """A new connection to `host:port` (TLS when `ssl_context` is given), opened within
    `timeout` seconds or ConnectTimeout; other failures raise as they are (OSError,
    ProxyError, ssl.SSLError)."""
    step = Step(f"TCP connect to proxy {proxy.label}" if proxy is not None else "TCP connect")
    try:
        async with asyncio.timeout(timeout) as window:
            return await _open(host, port, ssl_context=ssl_context, proxy=proxy, step=step)
    except TimeoutError as exc:
        # Ours, or the kernel's own ETIMEDOUT on connect: either way a failure to connect,
        # never a slow answer. (A caller's own deadline arrives here as a cancellation.)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if window.expired():
            why = f"timed out after {timeout:g}s ({step.name})"
        else:
            why = f"timed out ({step.name}: {exc})"
        raise ConnectTimeout(f"connect to {authority} {why}") from None


async def _open(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    proxy: Proxy | None,
    step: Step,
) -> Connection:
    loop = asyncio.get_running_loop()
    if ssl_context is None:
        if proxy is not None:  # plain http through a proxy: absolute-form requests
            _, conn = await proxy.connect(Connection)
        else:
            _, conn = await loop.create_connection(Connection, host, port)
        return conn
    if proxy is not None:
        transport = await open_tunnel(proxy, host, port, step=step)
    else:
        transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    step.name = "TLS handshake"
    conn = Connection()
    try:
        tls = await loop.start_tls(transport, conn, ssl_context, server_hostname=host)
    except BaseException:
        transport.close()
        raise
    if tls is None:  # only when the transport closed meanwhile
        raise ConnectionResetError(f"connection closed during the TLS handshake with {host}")
    conn.connection_made(tls)  # start_tls does not call it on the new protocol
    return conn
