"""Forward proxies as curl and aiohttp users know them.

`HTTPS_PROXY` / `HTTP_PROXY` (chosen by the provider's scheme), `NO_PROXY` (host names and their
subdomains, `.domain`, `*`, IP addresses, CIDR blocks, an optional `:port` on any of them), and a
per-provider `<PROVIDER>_PROXY` that overrides them all (empty: no proxy). An https provider is
reached through a CONNECT tunnel, TLS running end to end inside it (the provider's certificate is
verified, SNI is its name); an http provider gets absolute-form requests. Credentials in the proxy
URL go out as `Proxy-Authorization: Basic` and appear nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

from modelrouter.config import UpstreamSettings

if TYPE_CHECKING:
    from modelrouter.transport.dial import Step

P = TypeVar("P", bound=asyncio.BaseProtocol)
MAX_REPLY_HEAD = 16 * 1024  # a CONNECT reply's head; the proxy's own answer, never a body


class ProxyError(ConnectionError):
    """The proxy could not be reached, refused, or failed; the message names the proxy."""


class Proxy:
    __slots__ = ("authorization", "host", "label", "port")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("a proxy URL is http://[user:password@]host[:port]")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.label = (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        )
        self.authorization = b""  # the whole header line, or nothing
        if parts.username is not None or parts.password is not None:
            user = unquote(parts.username or "")
            token = base64.b64encode(f"{user}:{unquote(parts.password or '')}".encode())
            self.authorization = b"Proxy-Authorization: Basic " + token + b"\r\n"

    def __repr__(self) -> str:
        return f"Proxy({self.label})"  # never the credentials

    async def connect(self, factory: Callable[[], P]) -> tuple[asyncio.Transport, P]:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_connection(factory, self.host, self.port)
        except OSError as exc:
            raise ProxyError(f"proxy {self.label} unreachable: {exc}") from exc
        return transport, protocol


def choose_proxy(url: str, override: str | None, upstream: UpstreamSettings) -> Proxy | None:
    """The proxy for requests to `url`: the provider's override if set, else the environment's."""
    if override is not None:
        return Proxy(override) if override else None
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    configured = upstream.https_proxy if tls else upstream.http_proxy
    host = parts.hostname or ""
    if configured is None or bypassed(host, parts.port or (443 if tls else 80), upstream.no_proxy):
        return None
    return Proxy(configured)


def bypassed(host: str, port: int, no_proxy: Sequence[str]) -> bool:
    """Whether NO_PROXY sends `host:port` direct (as curl reads it; unreadable entries match
    nothing)."""
    host = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy:
        entry = raw.strip().lower()
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if not name or (entry_port is not None and entry_port != port):
            continue
        if address is not None:
            if _address_matches(address, name):
                return True
            continue
        name = name.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        name, _, rest = entry[1:].partition("]")
        return name, _port(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has several)
        name, _, port = entry.partition(":")
        return name, _port(port)
    return entry, None


def _port(text: str) -> int:
    return int(text) if text.isdigit() else -1  # -1 matches no port


def _address_matches(address: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str) -> bool:
    try:
        if "/" in name:
            return address in ipaddress.ip_network(name, strict=False)
        return address == ipaddress.ip_address(name)
    except ValueError:
        return False


class _Handshake(asyncio.Protocol):
    """Reads the proxy's reply to CONNECT, up to the end of its head."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reply: asyncio.Future[tuple[bytes, bytes]] = loop.create_future()
        self._data = b""

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            return
        self._data += data
        end = self._data.find(b"\r\n\r\n")
        if end >= 0:
            self.reply.set_result((self._data[:end], self._data[end + 4 :]))
        elif len(self._data) > MAX_REPLY_HEAD:
            self.reply.set_exception(ProxyError("proxy sent an oversized reply to CONNECT"))

    def connection_lost(self, _exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ProxyError("proxy closed the connection during CONNECT"))


async def open_tunnel(proxy: Proxy, host: str, port: int, *, step: Step) -> asyncio.Transport:
    """A tunnel to `host:port` opened by `proxy` with CONNECT: the raw transport, ready for
    the TLS handshake (the caller's next phase). `step` names the phase as it goes."""
    loop = asyncio.get_running_loop()
    transport, handshake = await proxy.connect(lambda: _Handshake(loop))
    step.name = f"CONNECT through proxy {proxy.label}"
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        await _establish(proxy, transport, handshake, authority)
    except BaseException:
        transport.close()
        raise
    return transport


async def _establish(
    proxy: Proxy, transport: asyncio.Transport, handshake: _Handshake, authority: str
) -> None:
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n".encode()
    transport.write(request + proxy.authorization + b"\r\n")
    try:
        head, rest = await handshake.reply
    except ProxyError as exc:
        raise ProxyError(f"proxy {proxy.label}: {exc}") from None
    status, reason = _status_line(head)
    if not 200 <= status < 300:
        refusal = f"{status} {reason}".strip() if status else "a malformed reply"
        raise ProxyError(f"proxy {proxy.label} refused CONNECT to {authority}: {refusal}")
    if rest:
        raise ProxyError(f"proxy {proxy.label} sent data before the tunnel's TLS handshake")


def _status_line(head: bytes) -> tuple[int, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return 0, ""
    return int(parts[1]), (parts[2] if len(parts) > 2 else "")[:100]
