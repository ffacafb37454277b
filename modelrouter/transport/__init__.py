"""A lean keep-alive HTTP/1.1 client for upstream calls (httptools parser, asyncio protocol)."""

from modelrouter.transport.connection import BadResponse, Connection, ConnectionLost
from modelrouter.transport.pool import Pool, Response

__all__ = ["BadResponse", "Connection", "ConnectionLost", "Pool", "Response"]
