"""Building the Redis client from REDIS_URL: a single server, Sentinel, or Cluster.

- `redis://[:password@]host:port/db`, `rediss://...` (TLS), `unix:///path?db=N`: one server.
- `redis+sentinel://[:password@]host1:26379,host2:26379/<master>[/db]` (or `rediss+sentinel://`):
  the master named `<master>`, found through those sentinels and followed across failovers.
  The password is the data nodes'; the sentinels are asked without one.
- `REDIS_CLUSTER=1` with a `redis://` URL naming any one node: Redis Cluster. Every key carries a
  hash tag per provider (`mr:{groq}:rpm:v1`) so each script touches a single slot.

Every socket operation is bounded by REDIS_TIMEOUT and the client does not retry by itself:
a failed call goes to the local fallback at once and the backend reconnects in the background.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from modelrouter.config import RedisSettings

Client = Redis | RedisCluster


class SentinelUrl:
    """`redis+sentinel://[:password@]h1:p1,h2:p2/master[/db]`, parsed."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme.startswith("rediss")
        hostlist = parts.netloc.rpartition("@")[2]
        self.password = unquote(parts.password) if parts.password else None
        self.hosts = [_host_port(item) for item in hostlist.split(",") if item]
        path = [p for p in parts.path.split("/") if p]
        if not self.hosts or not path:
            raise ValueError("expected redis+sentinel://host:port[,host:port...]/master[/db]")
        self.master = path[0]
        self.db = int(path[1]) if len(path) > 1 else 0


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return (host, int(port)) if host else (item, 26379)


def connect(url: str, settings: RedisSettings, *, name: str | None = None) -> Client:
    """A client for REDIS_URL; nothing is connected until the first command.

    `name` is set on each connection (CLIENT SETNAME), so CLIENT LIST shows whose it is.
    """
    timeout = settings.timeout
    common: dict[str, Any] = {
        "client_name": name,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
    }
    scheme = urlsplit(url).scheme
    if scheme.endswith("+sentinel"):
        spec = SentinelUrl(url)
        sentinel = Sentinel(spec.hosts, **common)  # type: ignore[no-untyped-call,unused-ignore]
        master: Redis = sentinel.master_for(
            spec.master,
            password=spec.password,
            db=spec.db,
            ssl=spec.tls,
            max_connections=settings.max_connections,
            **common,
        )
        return master
    if settings.cluster:
        return RedisCluster.from_url(url, max_connections=settings.max_connections, **common)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=settings.max_connections, timeout=timeout, **common
    )
    return Redis.from_pool(pool)
