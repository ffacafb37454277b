"""The Wire: commands from many callers share one connection and one write per loop iteration;
each caller gets its own reply, in order; one timer bounds every wait; a dropped connection
fails exactly what was waiting, as sent (in doubt) or not sent."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from modelrouter.config import RedisSettings
from modelrouter.state.connect import connect
from modelrouter.state.degraded import cause
from modelrouter.state.scripts import Script
from modelrouter.state.wire import InDoubt, NotSent, Wire
from tests.conftest import free_port, wait_until
from tests.shared_state.support import RedisServer, ping
from tests.shared_state.topology import wait_for


class CountingTransport:
    """Stands in for the wire's transport: counts the writes, passes everything on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()


def count_writes(wire: Wire) -> list[int]:
    counting = CountingTransport(wire._transport)
    wire._transport = counting  # type: ignore[assignment]
    return counting.writes


async def test_commands_issued_together_leave_in_one_write_and_each_caller_gets_its_reply(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {f"m{i}": i for i in range(10)})
    wire = Wire(rclient.connection_pool)
    assert await wire.send("PING") == "PONG"
    writes = count_writes(wire)
    removed = await asyncio.gather(*(wire.send("ZREM", key, f"m{i}") for i in (*range(8), 99)))
    assert removed == [1] * 8 + [0], "each caller gets its own command's answer"
    assert len(writes) == 1
    assert await rclient.zcard(key) == 2
    await wire.close()


async def test_the_connection_is_named_on_the_clients_database_and_outlives_collection(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, client_name=f"{prefix}-wire")
    wire = Wire(client.connection_pool)
    await wire.send("SET", f"{prefix}:db", "here")
    gc.collect()  # redis-py's connection object closes its streams when collected
    assert await wire.send("CLIENT", "GETNAME") == f"{prefix}-wire"
    assert await client.get(f"{prefix}:db") == b"here"  # the same database as the client
    await client.delete(f"{prefix}:db")
    await wire.close()
    await client.aclose()


async def test_a_release_nobody_waits_for_still_runs_before_later_commands(
    rclient: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:z"
    await rclient.zadd(key, {"a": 1})
    wire = Wire(rclient.connection_pool)
    wire.zrem(key, "a")  # nothing to await
    assert await wire.send("ZCARD", key) == 0
    await wire.close()


async def test_an_error_reaches_only_the_command_that_caused_it(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.set(f"{prefix}:s", "not a sorted set")
    wire = Wire(rclient.connection_pool)
    good = wire.send("ZREM", f"{prefix}:z", "a")
    bad = wire.send("ZREM", f"{prefix}:s", "a")
    after = wire.send("PING")
    assert await good == 0
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bad
    assert await after == "PONG"
    await wire.close()


async def test_a_script_the_server_forgot_is_loaded_and_run_again_for_its_caller(
    rclient: aioredis.Redis, prefix: str
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    wire = Wire(rclient.connection_pool)
    await rclient.script_flush()  # as after a restart or failover: NOSCRIPT on the first call
    results = await asyncio.gather(*(wire.script(script, [f"{prefix}:n"], []) for _ in range(3)))
    assert sorted(results) == [1, 2, 3]
    assert await rclient.evalsha(script.sha, 1, f"{prefix}:n") == 4, "loaded again"
    await wire.close()


async def test_a_caller_that_gave_up_is_skipped_and_the_others_answered(
    rclient: aioredis.Redis, prefix: str
) -> None:
    await rclient.zadd(f"{prefix}:z", {"a": 1, "b": 2})
    wire = Wire(rclient.connection_pool)
    gone = wire.send("ZREM", f"{prefix}:z", "a")
    kept = wire.send("ZREM", f"{prefix}:z", "b")
    gone.cancel()  # its caller gave up: the command was queued, it still runs
    assert await kept == 1
    assert await rclient.zcard(f"{prefix}:z") == 0
    await wire.close()


async def test_a_silent_server_fails_every_waiting_command_within_the_timeout() -> None:
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    wire = Wire(client.connection_pool, timeout=0.2)
    try:
        assert await wire.send("PING") == "PONG"
        server.pause()
        started = time.monotonic()
        results = await asyncio.gather(wire.send("PING"), wire.send("PING"), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(r, InDoubt) for r in results), "sent: they may have run"
        assert "no reply from Redis within 0.2 s" in str(results[0])
        print(f"\nwaits bounded by the wire's one timer: {waited * 1000:.0f} ms (timeout 200)")
        server.resume()
        assert await wire.send("PING") == "PONG", "a fresh connection"
        server.kill()
        # Written before the wire heard of the close (in doubt), or not: either way it says so.
        with pytest.raises((InDoubt, NotSent), match="closed by server"):
            await wire.send("PING")
        with pytest.raises(RedisConnectionError, match="111"):  # refused: never written
            await wire.send("PING")
    finally:
        server.resume()
        server.kill()
        await wire.close()
        await client.aclose()


@pytest.mark.parametrize("retries", ["none (as the backend connects)", "redis-py's default"])
async def test_nothing_listening_fails_the_commands_as_not_sent(retries: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    if retries.startswith("none"):
        client = connect(url, RedisSettings(timeout=0.2))
    else:  # retried with backoff past the wire's timeout: its timer fails them
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool, timeout=0.2)
    results = await asyncio.gather(wire.send("PING"), wire.send("PING"), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert not any(isinstance(r, InDoubt) for r in results), "never written: they did not run"
    assert {cause(r) for r in results} <= {"connection_refused", "timeout"}
    await client.aclose()


async def test_a_full_queue_refuses_at_once() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    wire = Wire(client.connection_pool, max_pending=2)
    first, second, third = (wire.send("PING") for _ in range(3))
    assert third.done()
    with pytest.raises(RedisConnectionError, match="too many"):
        third.result()
    await asyncio.gather(first, second, return_exceptions=True)
    await wait_until(lambda: asyncio.sleep(0, not wire._waiting))
    await client.aclose()


@pytest.fixture(scope="module")
def tls_and_socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A redis-server that also listens on a Unix socket and on a TLS port (self-signed)."""
    workdir = tmp_path_factory.mktemp("wire-transports")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    port, tls_port, sock = free_port(), free_port(), workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--unixsocket", str(sock), "--tls-port", str(tls_port)),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ping(f"redis://127.0.0.1:{port}/0"), "redis-server with TLS")
        yield {
            "unix": f"unix://{sock}?db=2",
            "tls": f"rediss://127.0.0.1:{tls_port}/3?ssl_cert_reqs=none",
        }
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("transport", ["unix", "tls"])
async def test_the_wire_runs_over_a_unix_socket_and_over_tls(
    tls_and_socket_server: dict[str, str], transport: str
) -> None:
    """redis-py opens the connection (the TLS handshake, SELECT, CLIENT SETNAME); the wire
    then takes its transport over."""
    client = connect(tls_and_socket_server[transport], RedisSettings(timeout=1.0), name="wired")
    wire = Wire(client.connection_pool, timeout=1.0)
    assert await wire.send("CLIENT", "GETNAME") == "wired"
    counts = await asyncio.gather(*(wire.send("INCR", "n") for _ in range(3)))
    assert counts == [1, 2, 3]
    assert await wire.send("GET", "n") == "3"
    await wire.send("DEL", "n")
    await wire.close()
    await client.aclose()
