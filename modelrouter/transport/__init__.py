"""A lean keep-alive HTTP/1.1 client for upstream calls (httptools parser, asyncio protocol),
with forward proxies, per-provider trust stores and bounded bodies."""

from modelrouter.transport.connection import BadResponse, Connection, ConnectionLost
from modelrouter.transport.dial import ConnectTimeout
from modelrouter.transport.factory import USER_AGENT, open_pool
from modelrouter.transport.pool import Pool, PoolFull
from modelrouter.transport.proxy import Proxy, ProxyError
from modelrouter.transport.response import Response

__all__ = [
    "USER_AGENT",
    "BadResponse",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "Pool",
    "PoolFull",
    "Proxy",
    "ProxyError",
    "Response",
    "open_pool",
]
