"""Sentinel and Cluster, each on throwaway local servers: the same backend, other URLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrouter.config import RedisSettings, load_settings
from modelrouter.observability import Metrics
from modelrouter.state import HealthRecord
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState
from tests.conftest import free_port, wait_until
from tests.shared_state.support import SERVER_FLAGS, RedisServer, ping

pytestmark = pytest.mark.redis


def _start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.05)


@pytest.fixture
def sentinel(own_redis: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {own_redis.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
    )
    proc = _start(["redis-server", str(conf), "--sentinel"], tmp_path)
    _wait(lambda: ping(f"redis://127.0.0.1:{port}/0"), "sentinel")
    yield f"redis+sentinel://127.0.0.1:{port}/mymaster/0"
    proc.kill()
    proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-cli") is None or shutil.which("redis-server") is None:
        if os.environ.get("MODELROUTER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-cli and redis-server are needed for a local cluster")
        pytest.skip("redis-cli and redis-server are needed for a local cluster")
    ports = [free_port() for _ in range(3)]
    # The bus port defaults to port + 10000, which a free port may push past 65535.
    procs = [
        _start(
            [
                "redis-server",
                "--port",
                str(p),
                "--bind",
                "127.0.0.1",
                *SERVER_FLAGS,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                f"nodes-{p}.conf",
            ],
            tmp_path,
        )
        for p in ports
    ]
    try:
        for p in ports:
            _wait(lambda p=p: ping(f"redis://127.0.0.1:{p}/0"), "cluster node")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def cluster_ok() -> bool:
            info = subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            return "cluster_state:ok" in info

        _wait(cluster_ok, "cluster")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def exercise(url: str, settings: RedisSettings) -> None:
    """Limits, leases and health (with its publication) through this topology."""
    writer = RedisState(connect(url, settings), settings=settings, metrics=Metrics())
    reader = RedisState(connect(url, settings), settings=settings, metrics=Metrics())
    heard: list[HealthRecord] = []
    reader.watch_health(lambda _, record: heard.append(record))
    try:
        await writer.start()
        await reader.start()
        assert (writer.mode, reader.mode) == ("redis", "redis")
        allowed = [(await writer.acquire_rate("rpm:groq", 3)).allowed for _ in range(4)]
        assert allowed == [True, True, True, False]
        lease = await writer.acquire_lease("streams", 1, ttl=5)
        assert lease is not None
        assert await reader.acquire_lease("streams", 1, ttl=5) is None
        await writer.release_lease(lease)
        await writer.save_health("groq", HealthRecord(1, time.time() + 30, "timeout"))
        await wait_until(lambda: asyncio.sleep(0, bool(heard)))
        assert heard[-1].failures == 1
        assert (await reader.load_health("groq")).failures == 1
    finally:
        await writer.close()
        await reader.close()


async def test_a_sentinel_url_finds_the_master_and_shares_state(sentinel: str) -> None:
    settings = load_settings({"REDIS_URL": sentinel, "REDIS_TIMEOUT": "0.5"})
    assert settings.redis_url is not None
    await exercise(settings.redis_url, settings.redis)


async def test_redis_cluster_keeps_each_script_on_one_slot_and_shares_state(
    cluster: str,
) -> None:
    settings = load_settings({"REDIS_URL": cluster, "REDIS_CLUSTER": "1", "REDIS_TIMEOUT": "0.5"})
    assert settings.redis_url is not None
    await exercise(settings.redis_url, settings.redis)
