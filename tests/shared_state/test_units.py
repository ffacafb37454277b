"""The logic around the Redis backend that needs no server: settings, URLs, scripts' callers,
the outage switch and the worker pool."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError
from structlog.testing import capture_logs

from modelrouter.cli import main
from modelrouter.config import ConfigError, RedisSettings, describe, load_settings, secrets_of
from modelrouter.observability import CURRENT_REQUEST_ID, Metrics
from modelrouter.observability.logging import add_request_id
from modelrouter.state import MemoryState, create_state
from modelrouter.state.connect import SentinelUrl, connect
from modelrouter.state.degraded import Breaker, cause
from modelrouter.state.scripts import Script
from modelrouter.workers import WorkerPool
from tests.conftest import wait_until

log = structlog.get_logger("tests")


def test_redis_settings_have_bounded_defaults() -> None:
    s = load_settings({})
    assert s.redis == RedisSettings(
        key_prefix="mr", timeout=0.25, expected_replicas=1, cluster=False, max_connections=64
    )
    assert (s.stream_lease_ttl, s.stream_lease_renew) == (30.0, 10.0)


def test_redis_settings_are_read_and_checked_all_at_once() -> None:
    s = load_settings(
        {
            "REDIS_KEY_PREFIX": "team-a",
            "REDIS_TIMEOUT": "0.1",
            "REDIS_EXPECTED_REPLICAS": "3",
            "REDIS_CLUSTER": "true",
        }
    )
    assert s.redis == RedisSettings(
        key_prefix="team-a", timeout=0.1, expected_replicas=3, cluster=True
    )
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "REDIS_KEY_PREFIX": "a{b}",
                "REDIS_TIMEOUT": "0",
                "REDIS_EXPECTED_REPLICAS": "0",
                "REDIS_CLUSTER": "maybe",
                "STREAM_LEASE_TTL_SECONDS": "5",
                "STREAM_LEASE_RENEW_SECONDS": "5",
            }
        )
    problems = "\n".join(error.value.problems)
    for name in (
        "REDIS_KEY_PREFIX",
        "REDIS_TIMEOUT",
        "REDIS_EXPECTED_REPLICAS",
        "REDIS_CLUSTER",
        "STREAM_LEASE_RENEW_SECONDS must be < STREAM_LEASE_TTL_SECONDS",
    ):
        assert name in problems


def test_a_sentinel_url_is_accepted_and_its_password_masked() -> None:
    url = "redis+sentinel://:s3cret-sentinel-pw@s1:26379,s2:26380/mymaster/2"
    s = load_settings({"REDIS_URL": url})
    assert "s3cret-sentinel-pw" not in str(describe(s))
    assert "s3cret-sentinel-pw" in secrets_of(s)
    spec = SentinelUrl(url)
    assert (spec.hosts, spec.master, spec.db, spec.password, spec.tls) == (
        [("s1", 26379), ("s2", 26380)],
        "mymaster",
        2,
        "s3cret-sentinel-pw",
        False,
    )
    assert SentinelUrl("rediss+sentinel://s1/m").hosts == [("s1", 26379)]
    with pytest.raises(ValueError, match="master"):
        SentinelUrl("redis+sentinel://s1:26379")


async def test_the_url_chooses_single_server_sentinel_or_cluster() -> None:
    settings = RedisSettings(timeout=0.1)
    single = connect("redis://127.0.0.1:1/0", settings)
    assert isinstance(single, Redis)
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster", settings)
    assert isinstance(sentinel, Redis)
    cluster = connect("redis://127.0.0.1:1/0", RedisSettings(cluster=True))
    assert isinstance(cluster, RedisCluster)
    for client in (single, sentinel, cluster):
        await client.aclose()


async def test_without_redis_url_the_state_is_in_memory() -> None:
    metrics = Metrics()
    state = create_state(load_settings({}), metrics)
    assert isinstance(state, MemoryState)
    await state.start()
    assert state.mode == "memory"
    assert metrics.state_backend.labels("memory")._value.get() == 1


class FlushedServer:
    """Answers NOSCRIPT until the script is loaded again (after a restart or SCRIPT FLUSH)."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.calls: list[str] = []

    async def evalsha(self, sha: str, numkeys: int, *args: Any) -> str:
        self.calls.append("evalsha")
        if sha not in self.loaded:
            raise NoScriptError("NOSCRIPT No matching script")
        return "ran"

    async def script_load(self, source: str) -> str:
        self.calls.append("script_load")
        self.loaded.add(Script(source).sha)
        return Script(source).sha


async def test_a_script_is_called_by_sha_and_loaded_again_on_noscript() -> None:
    server = FlushedServer()
    script = Script("return 1")
    assert await script(server, ["k"], [1]) == "ran"
    assert await script(server, ["k"], [1]) == "ran"
    assert server.calls == ["evalsha", "script_load", "evalsha", "evalsha"]


async def test_the_outage_switch_logs_once_per_transition_and_counts_every_error() -> None:
    metrics = Metrics()
    attempts: list[int] = []

    async def connect() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("still down")

    breaker = quick_breaker(metrics=metrics, connect=connect)
    with capture_logs() as logs:
        breaker.restored()
        for _ in range(3):
            breaker.failed("rate", TimeoutError())
        assert not breaker.up
        await wait_until(lambda: _now(breaker.up))
        await breaker.close()
    transitions = [e["event"] for e in logs if e["log_level"] != "debug"]
    assert transitions == ["redis_connected", "redis_unavailable", "redis_recovered"]
    assert logs[1]["cause"] == "timeout"
    assert metrics.redis_errors.labels("rate")._value.get() == 3
    assert metrics.state_backend.labels("redis")._value.get() == 1
    assert len(attempts) == 3
    assert breaker.recoveries == 1


async def test_redis_is_back_only_once_the_keyed_probe_held_for_the_hold_time() -> None:
    """A recovering Cluster answers PING but not yet the keyed commands: no switch back until
    the probe has succeeded throughout the hold; a relapse soon after doubles the next hold."""
    probes: list[bool] = [False, False, True, True, False, *[True] * 50]  # a flicker mid-hold
    ran: list[bool] = []

    async def probe() -> None:
        ok = probes[len(ran)] if len(ran) < len(probes) else True
        ran.append(ok)
        if not ok:
            raise ClusterDownError("CLUSTERDOWN The cluster is down")

    breaker = quick_breaker(probe=probe, hold=0.05)
    breaker.restored()
    with capture_logs() as logs:
        breaker.failed("rate", ClusterDownError("CLUSTERDOWN The cluster is down"))
        await wait_until(lambda: _now(breaker.up))
        assert ran[:5] == [False, False, True, True, False], "the flicker restarted the hold"
        assert ran.count(True) >= 6, "then a whole hold of successful probes"
        breaker.failed("rate", ClusterDownError("CLUSTERDOWN The cluster is down"))
        assert breaker.hold == 0.1, "a relapse within the window doubles the hold"
        await wait_until(lambda: _now(breaker.up))
        await breaker.close()
    events = [(e["event"], e.get("cause")) for e in logs if e["log_level"] != "debug"]
    assert events == [
        ("redis_unavailable", "clusterdown"),
        ("redis_recovered", None),
        ("redis_unavailable", "clusterdown"),
        ("redis_recovered", None),
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ClusterDownError("The cluster is down"), "clusterdown"),
        (ResponseError("CLUSTERDOWN Hash slot not served"), "clusterdown"),
        (RedisTimeoutError("Timeout reading from socket"), "timeout"),
        (TimeoutError(), "timeout"),
        (AuthenticationError("invalid username-password pair"), "auth"),
        (ResponseError("NOAUTH Authentication required."), "auth"),
        (ResponseError("WRONGPASS invalid username-password pair"), "auth"),
        (
            RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
            "connection_refused",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "connection_refused"),
        (RedisConnectionError("Connection closed by server."), "connection_closed"),
        (
            RedisConnectionError("Error UNKNOWN while writing to socket. Connection lost."),
            "connection_closed",
        ),
        (ReadOnlyError("READONLY You can't write against a read only replica."), "readonly"),
        (ResponseError("LOADING Redis is loading the dataset in memory"), "loading"),
        (ResponseError("MASTERDOWN Link with MASTER is down"), "masterdown"),
        (MasterNotFoundError("No master found for 'mymaster'"), "no_master"),
        (RedisConnectionError("Error 104 while reading"), "connection"),
        (ValueError("odd"), "ValueError"),
    ],
)
def test_the_logged_cause_names_what_went_wrong(error: BaseException, expected: str) -> None:
    assert cause(error) == expected


async def test_transition_lines_carry_no_request_id_of_the_request_that_noticed() -> None:
    """The request whose call failed first is not what `redis_unavailable` is about, and the
    reconnect task it started must not lend its id to `redis_recovered` either."""

    breaker = quick_breaker()
    breaker.restored()

    async def a_request() -> None:
        CURRENT_REQUEST_ID.set("req-unrelated-1")
        log.info("request_line")
        breaker.failed("rate", RedisConnectionError("Connection closed by server."))

    with capture_logs(processors=[add_request_id]) as logs:
        await asyncio.get_running_loop().create_task(a_request())
        await wait_until(lambda: _now(breaker.up))
        await breaker.close()
    by_event = {e["event"]: e for e in logs}
    assert by_event["request_line"]["request_id"] == "req-unrelated-1", "the processor runs"
    assert "request_id" not in by_event["redis_unavailable"]
    assert "request_id" not in by_event["redis_recovered"]
    assert by_event["redis_unavailable"]["cause"] == "connection_closed"


async def _nothing() -> None:
    return None


def quick_breaker(
    *,
    metrics: Metrics | None = None,
    connect: Callable[[], Awaitable[None]] = _nothing,
    probe: Callable[[], Awaitable[None]] = _nothing,
    hold: float = 0.01,
) -> Breaker:
    """A Breaker with short waits whose handover just switches back to Redis."""

    async def restore() -> None:
        breaker.restored()

    breaker = Breaker(
        metrics=metrics or Metrics(),
        connect=connect,
        probe=probe,
        restore=restore,
        min_wait=0.001,
        max_wait=0.01,
        hold=hold,
    )
    return breaker


async def _now(value: bool) -> bool:
    return value


def test_serve_refuses_several_workers_without_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("API_KEY", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    assert "needs REDIS_URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--workers", "0"])


def test_serve_with_workers_and_redis_runs_the_worker_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/13")
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.setattr("modelrouter.workers.run_workers", lambda _, count: ran.append(count) or 0)
    # serve configures logging with cached loggers, which would outlive this test.
    monkeypatch.setattr("modelrouter.cli.configure_logging", lambda **_: None)
    assert main(["serve", "--workers", "3"]) == 0
    assert ran == [3]


def test_the_worker_pool_gives_up_on_workers_that_keep_dying(tmp_path: Any) -> None:
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pool = WorkerPool(command, env, 2, max_restarts=2, poll=0.05)
    with capture_logs() as logs:
        assert pool.run() == 1
    assert "workers_failing" in [e["event"] for e in logs]


def test_the_worker_pool_stops_its_workers_on_sigterm(tmp_path: Any) -> None:
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    pool = WorkerPool(command, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, 2, poll=0.05)
    threading.Timer(0.5, pool._stop, (15, None)).start()
    assert pool.run() == 0
    assert all(proc.poll() is not None for proc in pool.procs)
