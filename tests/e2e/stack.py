"""Processes of the end-to-end tests: the mock provider, two gateway replicas, nginx in front.

Everything runs as separate processes on loopback ports, as in a deployment: `python -m
modelrouter mock-provider`, two `python -m modelrouter serve` sharing one real Redis (its own db
number and key prefix, deleted afterwards), and the system's nginx with the repository's conf.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from tests.conftest import GROQ_KEY, OPENROUTER_KEY, free_port
from tests.e2e.nginx import Nginx
from tests.shared_state.support import ROOT, Replica, gateway_env, ping

# db 13 belongs to the shared-state tests; these keep to their own.
REDIS_URL = os.environ.get("MODELROUTER_E2E_REDIS_URL", "redis://127.0.0.1:6379/12")
START_TIMEOUT = 20.0


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """A plain GET from the test's own thread (fixtures are synchronous)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_until_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if replica.proc.poll() is not None:
            raise RuntimeError(f"replica exited {replica.proc.returncode}: {replica.output()}")
        try:
            if http_get(f"{replica.url}/health")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica not healthy after {START_TIMEOUT} s: {replica.output()}")
        time.sleep(0.05)


class MockProvider:
    """`python -m modelrouter mock-provider` on a free port, shared by every test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "mock-provider", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                http_get(f"{self.url}/_mock/stats")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the mock provider did not start") from None
                time.sleep(0.05)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_mock/reset", method="POST")
        with urllib.request.urlopen(request, timeout=2):
            pass

    def base(self, spec: str = "") -> str:
        return f"{self.url}/x/{spec}/v1" if spec else f"{self.url}/v1"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stack:
    """Two replicas sharing Redis (a key prefix of their own) behind nginx."""

    def __init__(self, mock: MockProvider, **settings: str) -> None:
        if not ping(REDIS_URL):
            raise RuntimeError(
                f"no Redis at {REDIS_URL}: run one on 127.0.0.1:6379 (.ci/run does) "
                "or set MODELROUTER_E2E_REDIS_URL"
            )
        self.prefix = f"mre2e-{uuid.uuid4().hex[:12]}"
        defaults = {
            "PROVIDER_ORDER": "groq,openrouter",
            "GROQ_API_KEY": GROQ_KEY,
            "GROQ_BASE_URL": mock.base(),
            "OPENROUTER_API_KEY": OPENROUTER_KEY,
            "OPENROUTER_BASE_URL": mock.base(),
            "GROQ_RATE_LIMIT": "0",
            "OPENROUTER_RATE_LIMIT": "0",
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": self.prefix,
            "REDIS_EXPECTED_REPLICAS": "2",
        }
        self.env = gateway_env(**(defaults | settings))
        self.replicas = [Replica(self.env), Replica(self.env)]
        self.nginx: Nginx | None = None
        try:
            with ThreadPoolExecutor(len(self.replicas)) as pool:
                list(pool.map(wait_until_healthy, self.replicas))
            self.nginx = Nginx([f"127.0.0.1:{replica.port}" for replica in self.replicas])
        except BaseException:
            self.stop()
            raise
        self.url = self.nginx.url

    def nginx_log(self) -> str:
        assert self.nginx is not None
        return self.nginx.access_log.read_text(errors="replace")

    def served(self, at_least: int = 0) -> list[tuple[str, str]]:
        """(request id, replica) of each request in nginx's access log, in order; the replica
        is `a` or `b`, or `a, b` when the first one failed and nginx passed it on.

        nginx writes a request's line as it finishes, maybe just after the client has read the
        answer: wait (a little) until the log has `at_least` lines.
        """
        deadline = time.monotonic() + 5.0
        while len(lines := self.nginx_log().splitlines()) < at_least:
            assert time.monotonic() < deadline, f"nginx logged {len(lines)} of {at_least}"
            time.sleep(0.01)
        names = {f"127.0.0.1:{r.port}": name for r, name in zip(self.replicas, "ab", strict=True)}
        entries = []
        for line in lines:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            upstream = fields["upstream"].rstrip(",").split(",")
            replica = ", ".join(names.get(a.strip(), a.strip()) for a in upstream if a.strip())
            entries.append((fields["request_id"], replica))
        return entries

    def served_by(self, at_least: int = 0) -> list[str]:
        return [replica for _, replica in self.served(at_least)]

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(f"{self.prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
