"""The logic around the Redis backend that needs no server: settings, URLs, scripts' callers,
the outage switch and the worker pool."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError
from structlog.testing import capture_logs

from modelrouter.cli import main
from modelrouter.config import ConfigError, RedisSettings, describe, load_settings, secrets_of
from modelrouter.observability import Metrics
from modelrouter.state import MemoryState, create_state
from modelrouter.state.connect import SentinelUrl, connect
from modelrouter.state.degraded import Breaker
from modelrouter.state.scripts import Script
from modelrouter.workers import WorkerPool
from tests.conftest import wait_until


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

    async def recover() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("still down")
        breaker.restored()

    breaker = Breaker(metrics=metrics, recover=recover, min_wait=0.001, max_wait=0.01)
    with capture_logs() as logs:
        breaker.restored()
        for _ in range(3):
            breaker.failed("rate", TimeoutError())
        assert not breaker.up
        await wait_until(lambda: _now(breaker.up))
        await breaker.close()
    transitions = [e["event"] for e in logs if e["log_level"] != "debug"]
    assert transitions == ["redis_connected", "redis_unavailable", "redis_recovered"]
    assert metrics.redis_errors.labels("rate")._value.get() == 3
    assert metrics.state_backend.labels("redis")._value.get() == 1
    assert len(attempts) == 3
    assert breaker.recoveries == 1


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
