"""Real Redis topologies: a 3-master Cluster (a master killed and restarted, the cluster in
`fail` state and back, a slot migrated under traffic) and Sentinel (one master, one replica,
three sentinels; the master killed mid-traffic). The GCRA, lease and health cases run on the
Cluster too, in `test_contract.py`.

Timings are printed (run with -s), never asserted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from modelrouter.config import RedisSettings, load_settings
from modelrouter.observability import Metrics
from modelrouter.state import HealthRecord
from modelrouter.state.connect import connect
from modelrouter.state.redis import RedisState
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, two_providers, wait_until
from tests.shared_state.topology import Cluster, Node, SentinelGroup

pytestmark = pytest.mark.redis
GROQ = "tokens=3"  # the rate-limited provider's own path on the mock, counted apart
LIMIT = 20  # GROQ_RATE_LIMIT in the gateway tests


MakeState = Callable[..., RedisState]


@pytest.fixture
async def cluster(redis_cluster: Cluster) -> AsyncIterator[Cluster]:
    """The session's cluster, whole again after the test whatever happened in it."""
    yield redis_cluster
    for node in redis_cluster.nodes:
        if node.proc is not None and node.proc.poll() is not None:
            await restart(redis_cluster, node)


@pytest.fixture
async def cluster_state(redis_cluster: Cluster, prefix: str) -> AsyncIterator[MakeState]:
    made: list[RedisState] = []

    def make(*, replicas: int = 1) -> RedisState:
        settings = RedisSettings(
            key_prefix=prefix, timeout=0.5, cluster=True, expected_replicas=replicas
        )
        state = RedisState(
            connect(redis_cluster.url, settings),
            settings=settings,
            metrics=Metrics(),
            min_wait=0.02,
            hold=0.3,
        )
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()


def key_nodes(cluster: Cluster, prefix: str, *names: str) -> set[int]:
    return {cluster.owner(f"{prefix}:{{{name}}}:x").port for name in names}


def bystander(cluster: Cluster, prefix: str) -> Node:
    """A master that holds none of the gateway's keys: killing it fails the whole cluster
    (full coverage is required) while every key the limits use survives."""
    used = key_nodes(cluster, prefix, "groq", "openrouter", "streams", "probe")
    return next(node for node in cluster.nodes if node.port not in used)


async def restart(cluster: Cluster, node: Node) -> None:
    await asyncio.to_thread(node.start)
    await asyncio.to_thread(cluster.wait_state, "ok")


# -- Cluster ---------------------------------------------------------------------------------


async def test_a_cluster_in_fail_state_is_followed_without_flapping_and_within_the_bound(
    cluster: Cluster, gateway: Gateway, mock: Mock, prefix: str
) -> None:
    """Two gateways, GROQ_RATE_LIMIT=20, steady traffic. A master dies: the cluster goes to
    `fail` (every keyed command: CLUSTERDOWN, while PING still answers), then comes back. Each
    gateway switches to local state once and back once, and groq gets no more calls over the
    whole window than docs/redis.md's bound: LIMIT + LIMIT * seconds / 60 + 1 per replica."""
    env = two_providers(
        mock,
        groq=GROQ,
        GROQ_RATE_LIMIT=str(LIMIT),
        REDIS_URL=cluster.url,
        REDIS_CLUSTER="1",
        REDIS_KEY_PREFIX=prefix,
        REDIS_TIMEOUT="0.5",
        REDIS_EXPECTED_REPLICAS="2",
    )
    gateways = [await gateway(**env), await gateway(**env)]
    victim = bystander(cluster, prefix)
    stop = asyncio.Event()
    statuses: list[int] = []

    async def traffic(index: int) -> None:
        while not stop.is_set():
            response = await gateways[index].post("/chat", json=USER)
            statuses.append(response.status)
            await response.read()
            await asyncio.sleep(0.05)

    def modes() -> list[str]:
        return [g.app[RUNTIME].system.snapshot().state_backend for g in gateways]

    with capture_logs() as logs:
        started = time.monotonic()
        load = [asyncio.create_task(traffic(i)) for i in (0, 1)]
        try:
            await asyncio.sleep(0.5)  # part of the budget used through Redis
            victim.kill()
            await asyncio.to_thread(cluster.wait_state, "fail")
            await wait_until(lambda: asyncio.sleep(0, modes() == ["degraded"] * 2), timeout=15)
            down = time.monotonic()
            await asyncio.sleep(1.0)
            await restart(cluster, victim)
            await wait_until(lambda: asyncio.sleep(0, modes() == ["redis"] * 2), timeout=15)
            back = time.monotonic()
            await asyncio.sleep(1.0)  # shared again afterwards, still within the bound
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        seconds = time.monotonic() - started
    calls = await mock.count(GROQ)
    bound = LIMIT + math.ceil(LIMIT * seconds / 60) + len(gateways)
    transitions = [
        e["event"] for e in logs if e["event"] in ("redis_unavailable", "redis_recovered")
    ]
    print(
        f"\ncluster fail: degraded {down - started:.1f} s after start, back on Redis "
        f"{back - down:.1f} s later; {len(statuses)} requests, groq called {calls} times "
        f"(bound {bound} over {seconds:.1f} s); transitions {transitions}"
    )
    assert set(statuses) == {200}
    assert transitions.count("redis_unavailable") == 2, "once per gateway: no flapping"
    assert transitions.count("redis_recovered") == 2
    causes = {e["cause"]: e["error"] for e in logs if e["event"] == "redis_unavailable"}
    print(f"causes logged: {causes}")
    assert set(causes) <= {"clusterdown", "connection_refused", "connection_closed", "timeout"}
    assert calls <= bound


async def test_a_killed_master_is_restarted_and_gets_the_local_use_handed_over(
    cluster: Cluster, cluster_state: MakeState
) -> None:
    """The master holding groq's bucket dies and comes back empty (no persistence, no
    replica: the 2 requests counted before are lost with it). What was used locally meanwhile
    is handed over to it, once, and a stream lease taken locally is moved to it."""
    state = cluster_state()
    await state.start()
    victim = cluster.owner(state.key("rpm:groq"))
    assert [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(2)] == [True] * 2
    victim.kill()
    local = [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(5)]
    assert state.mode == "degraded"
    assert local == [True] * 4 + [False], "the 2 used before carry over: 4 of 6 left locally"
    lease = await state.acquire_lease("streams", 5, ttl=30)
    assert lease is not None
    await restart(cluster, victim)
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=15)
    after = [(await state.acquire_rate("rpm:groq", 6)).allowed for _ in range(3)]
    assert after == [True, True, False], "the 4 used locally were handed over, once"
    admin = aioredis.RedisCluster.from_url(cluster.url, decode_responses=True)
    assert await admin.zrange(state.key("streams"), 0, -1) == [lease.token]
    await state.release_lease(lease)
    await wait_until(lambda: _absent(admin, state.key("streams")))
    await admin.aclose()


async def _absent(client: Any, key: str) -> bool:
    return not await client.exists(key)


async def test_a_slot_migrates_under_traffic_and_the_limit_stays_exact(
    cluster: Cluster, cluster_state: MakeState
) -> None:
    """groq's slot moves to another master (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while
    two replicas draw on its bucket: the client follows ASK and MOVED, nothing goes local, and
    exactly the limit is allowed."""
    first, second = cluster_state(), cluster_state()
    await first.start()
    await second.start()
    key = first.key("rpm:groq")
    source = cluster.owner(key)
    target = next(node for node in cluster.nodes if node is not source)
    decisions: list[bool] = []
    stop = asyncio.Event()

    async def draw(state: RedisState) -> None:
        while not stop.is_set():
            decisions.append((await state.acquire_rate("rpm:groq", 40)).allowed)
            lease = await state.acquire_lease("streams", 100, ttl=30)
            assert lease is not None
            await state.release_lease(lease)
            await asyncio.sleep(0.01)

    load = [asyncio.create_task(draw(s)) for s in (first, second)]
    await asyncio.sleep(0.2)
    await asyncio.to_thread(cluster.migrate_slot_of, key, target)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*load)
    assert cluster.owner(key) is target
    assert (first.mode, second.mode) == ("redis", "redis")
    assert decisions.count(True) == 40, f"{len(decisions)} decisions"
    assert (await first.acquire_rate("rpm:groq", 40)).allowed is False


# -- Sentinel --------------------------------------------------------------------------------


def sentinel_settings(group: SentinelGroup, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": group.url, "REDIS_TIMEOUT": "0.5", **extra}


async def test_a_sentinel_url_finds_the_master_and_shares_state(
    sentinel_group: SentinelGroup, prefix: str
) -> None:
    settings = load_settings(sentinel_settings(sentinel_group, REDIS_KEY_PREFIX=prefix))
    assert settings.redis_url is not None
    writer = RedisState(
        connect(settings.redis_url, settings.redis), settings=settings.redis, metrics=Metrics()
    )
    reader = RedisState(
        connect(settings.redis_url, settings.redis), settings=settings.redis, metrics=Metrics()
    )
    heard: list[HealthRecord] = []
    reader.watch_health(lambda _, record: heard.append(record))
    try:
        await writer.start()
        await reader.start()
        assert (writer.mode, reader.mode) == ("redis", "redis")
        allowed = [
            (await (writer, reader)[i % 2].acquire_rate("rpm:groq", 3)).allowed for i in range(4)
        ]
        assert allowed == [True, True, True, False]
        lease = await writer.acquire_lease("streams", 1, ttl=5)
        assert lease is not None
        assert await reader.acquire_lease("streams", 1, ttl=5) is None
        await writer.release_lease(lease)
        await writer.save_health("groq", HealthRecord(1, time.time() + 30, "timeout"))
        await wait_until(lambda: asyncio.sleep(0, bool(heard)))
        assert (await reader.load_health("groq")).failures == 1
        with sentinel_group.master.admin() as master:
            assert master.exists(writer.key("rpm:groq")), "written on the master"
    finally:
        await writer.close()
        await reader.close()


async def test_a_failover_mid_traffic_is_followed_with_no_failed_request(
    sentinel_group: SentinelGroup, gateway: Gateway, mock: Mock, prefix: str
) -> None:
    """The master dies under /chat and /stream traffic: the gateway serves from local state
    (the documented fallback: every request answered) until the sentinels promote the
    replica, then follows the new master, where its keys are written from then on."""
    env = two_providers(
        mock,
        groq=GROQ,
        GROQ_RATE_LIMIT="100000",
        **sentinel_settings(sentinel_group, REDIS_KEY_PREFIX=prefix),
    )
    client = await gateway(**env)
    state = client.app[RUNTIME].system.state
    old, new = sentinel_group.master, sentinel_group.replica
    stop = asyncio.Event()
    results: dict[str, list[int]] = {"before": [], "during": [], "after": []}
    phase = "before"

    async def traffic(path: str) -> None:
        while not stop.is_set():
            response = await client.post(path, json=USER)
            body = await response.read()
            ok = response.status == 200 and (path == "/chat" or b"[DONE]" in body)
            results[phase].append(200 if ok else response.status)

    load = [asyncio.create_task(traffic(p)) for p in ("/chat", "/stream", "/chat")]
    await asyncio.sleep(0.5)
    phase = "during"
    killed = time.monotonic()
    old.kill()
    await wait_until(lambda: asyncio.sleep(0, sentinel_group.master_port() == new.port), timeout=30)
    promoted = time.monotonic()
    await wait_until(lambda: asyncio.sleep(0, state.mode == "redis"), timeout=30)
    followed = time.monotonic()
    phase = "after"
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*load)
    print(
        f"\nsentinel failover: replica promoted {promoted - killed:.1f} s after the kill, "
        f"gateway on the new master {followed - killed:.1f} s after; requests "
        + ", ".join(f"{name} {len(codes)}" for name, codes in results.items())
    )
    for name, codes in results.items():
        assert codes, f"no request completed {name} the failover"
        assert set(codes) == {200}, name
    with new.admin() as master:
        assert master.info("replication")["role"] == "master"
        # Scripts reach a replica as their effects: these calls came from the gateway itself.
        calls = master.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert calls > 0, "the limits run on the new master"
