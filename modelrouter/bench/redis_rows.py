"""The Redis rows of `make bench`: Redis mode measured where it is paid.

With Redis, a request pays the rate script only when its provider has a rate limit, and a
stream pays a lease only under a stream cap: so the bench gives its providers a limit no run
reaches (`RATE_LIMIT` a minute; the GCRA's burst is the limit) and a stream cap no run reaches
(`STREAM_CAP`), and every request and stream pays its commands without ever being refused.
Beside memory mode, in the same rounds, run a gateway on Redis over loopback and one on the
same Redis behind the delay proxy (`modelrouter.bench.delay`: a round trip one network hop
longer), whose CPU is sampled beside the gateway's.
"""

from __future__ import annotations

import os
import statistics
import time
from urllib.parse import urlsplit, urlunsplit

import redis

from modelrouter.config import is_loopback

RATE_LIMIT = 10_000_000  # requests a minute: 166,000/s after a burst of ten million
STREAM_CAP = 100_000  # MAX_CONCURRENT_STREAMS: above any stream count the bench holds
DEFAULT_DELAY_MS = 1.0
PINGS = 200  # round trips timed for the report, one at a time


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def key_prefix(tag: str) -> str:
    """A key prefix of this run's own, one per gateway (`tag`); `forget` deletes them all."""
    return f"mrbench{os.getpid()}-{tag}"


def redis_env(url: str, tag: str) -> dict[str, str]:
    """Shared state in Redis at `url`, under a key prefix of this run's own."""
    return {"REDIS_URL": url, "REDIS_KEY_PREFIX": key_prefix(tag)}


def proxy_target(url: str) -> tuple[str, int]:
    """Where a delay proxy for `url` connects: one server over TCP on loopback only."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("the delay proxy needs a redis:// or rediss:// REDIS_URL (one server)")
    if not is_loopback(parts.hostname):
        raise ValueError("the delay proxy reaches a Redis on loopback only")
    return parts.hostname, parts.port or 6379


def through_proxy(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's (credentials and db kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def round_trip_ms(url: str, *, pings: int = PINGS) -> float:
    """Median time of a PING, one at a time, from this process (redis-py's cost included)."""
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        client.ping()  # connected before timing
        times = []
        for _ in range(pings):
            started = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    return statistics.median(times) * 1000


def forget(url: str) -> int:
    """Delete the keys this run left under its prefixes; returns how many."""
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        keys = list(client.scan_iter(match=f"mrbench{os.getpid()}-*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    except (redis.RedisError, OSError):
        return 0
    finally:
        client.close()
