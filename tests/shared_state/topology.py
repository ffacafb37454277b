"""Real Redis topologies on loopback: a 3-master Cluster and a Sentinel group (one master, one
replica, three sentinels), every node a `redis-server` process that tests may kill and restart.

Short timeouts keep failure detection to a second or two: `cluster-node-timeout 1000`,
`down-after-milliseconds 1000`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.conftest import free_port
from tests.shared_state.support import SERVER_FLAGS, ping

NODE_TIMEOUT_MS = 1000


def tools_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def wait_for(check: Callable[[], bool], what: str, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def _admin(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=1,
        socket_connect_timeout=1,
        decode_responses=True,
    )


class Node:
    """One redis-server process on a fixed port; `kill` and `start` keep its port and files."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Node:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*command, *SERVER_FLAGS, *self.extra],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: ping(self.url), f"redis-server on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def admin(self) -> redis.Redis:
        return _admin(self.port)


class Cluster:
    """Three masters, no replicas: all 16384 slots covered, so a lost master fails the cluster
    (`cluster-require-full-coverage yes`, the default) until it comes back."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[Node] = []
        for index in range(3):
            node_dir = workdir / f"node{index}"
            node_dir.mkdir()
            # The bus port defaults to port + 10000, which a free port may push past 65535.
            flags = (
                *("--cluster-enabled", "yes", "--cluster-port", str(free_port())),
                *("--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            )
            self.nodes.append(Node(node_dir, *flags))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_state("ok")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def state(self, node: Node) -> str | None:
        try:
            with node.admin() as client:
                return str(client.execute_command("CLUSTER INFO")["cluster_state"])
        except (redis.RedisError, OSError):
            return None

    def wait_state(self, wanted: str, *, timeout: float = 20.0) -> None:
        """Until every running node reports `cluster_state:<wanted>`."""

        def reached() -> bool:
            live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            return all(self.state(node) == wanted for node in live)

        wait_for(reached, f"cluster_state:{wanted}", timeout=timeout)

    def owner(self, key: str) -> Node:
        with self.nodes[0].admin() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(slot)

    def node_id(self, node: Node) -> str:
        with node.admin() as client:
            return str(client.execute_command("CLUSTER MYID"))

    def migrate_slot_of(self, key: str, target: Node) -> None:
        """Move `key`'s slot with its keys to `target`, as `redis-cli --cluster reshard` does:
        IMPORTING/MIGRATING, MIGRATE of every key, then SETSLOT NODE on every master."""
        source = self.owner(key)
        with source.admin() as src, target.admin() as dst:
            slot = int(src.execute_command("CLUSTER KEYSLOT", key))
            source_id, target_id = self.node_id(source), self.node_id(target)
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in self.nodes:
                with node.admin() as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


class SentinelGroup:
    """One master, one replica and three sentinels (quorum 2), all on loopback."""

    NAME = "mymaster"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master = Node(workdir)
        self.replica = Node(workdir)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.NAME}/0"

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.extra = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        wait_for(self._replica_synced, "replication")
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {self.NAME} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    cwd=self.workdir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.sentinel_ports:
            wait_for(lambda port=port: self._sees_replica(port), f"sentinel {port}")
        return self

    def _replica_synced(self) -> bool:
        with self.replica.admin() as client:
            return client.info("replication").get("master_link_status") == "up"

    def _sees_replica(self, port: int) -> bool:
        try:
            with _admin(port) as client:
                replicas = client.execute_command("SENTINEL REPLICAS", self.NAME)
                sentinels = client.execute_command("SENTINEL SENTINELS", self.NAME)
        except (redis.RedisError, OSError):
            return False
        return len(replicas) == 1 and len(sentinels) == 2

    def master_port(self) -> int:
        with _admin(self.sentinel_ports[0]) as client:
            _host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.NAME)
            return int(port)

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.master.kill()
        self.replica.kill()
