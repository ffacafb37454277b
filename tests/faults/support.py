"""Real processes for the fault suite: the mock provider, gateways, and what a leak looks like.

Each gateway is `python -m modelrouter serve` in its own process; what it holds is read from
outside: `/metrics` (open client connections, tasks, requests and streams in flight, idle
upstream connections), `/health` (attempts in flight per provider) and `/proc` (the sockets the
process really has open to the mock provider).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.conftest import (
    GROQ_KEY,
    OPENROUTER_KEY,
    Mock,
    free_port,
    parse_sse,
    two_providers,
)
from tests.scrape import Page
from tests.shared_state.support import Replica, gateway_env

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "fault-suite-client-key-0001"
USER = {"messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SECRETS = (GROQ_KEY, OPENROUTER_KEY, CLIENT_KEY)  # the providers' keys: tests.conftest's


def session() -> aiohttp.ClientSession:
    """A client that opens a connection per request, so none stays open between them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def _wait_up(proc: subprocess.Popen[bytes], output: Callable[[], str], url: str) -> None:
    """Block until `url` answers (a module's fixtures start processes outside any loop)."""
    end = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"not up: {output()[-3000:]}") from None
            time.sleep(0.05)


class MockProcess:
    """`python -m modelrouter mock-provider` on a free port; its output in a temporary file."""

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "mock-provider", "--port", str(self.port)]
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [*command, *flags], env=gateway_env(), cwd=ROOT, stdout=self.log, stderr=self.log
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def started(self) -> MockProcess:
        _wait_up(self.proc, self.output, f"{self.url}/_mock/stats")
        return self

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()

    def base(self, spec: str = "") -> str:
        """An OpenAI-flavour base URL whose requests get the faults of `spec`."""
        return Mock(self.url, None).base(spec)  # type: ignore[arg-type] - no request made

    async def stats(self) -> dict[str, Any]:
        async with session() as client:
            return await Mock(self.url, client).stats()

    async def count(self, spec: str) -> int:
        async with session() as client:
            return await Mock(self.url, client).count(spec)


def fault_env(
    mock: MockProcess, groq: str = "", openrouter: str = "", **extra: str
) -> dict[str, str]:
    """Groq then OpenRouter, both on the mock (each with its own fault spec), short timeouts."""
    return {
        "API_KEY": CLIENT_KEY,
        "PROVIDER_ORDER": "groq,openrouter",
        **two_providers(mock, groq, openrouter),  # type: ignore[arg-type] - base() is all it needs
        "FIRST_CHUNK_TIMEOUT": "1",
        "PROVIDER_TIMEOUT": "1.5",
        "MAX_OPERATION_TIMEOUT": "10",
        "BACKOFF_BASE_SECONDS": "2",
        "BACKOFF_MAX_SECONDS": "60",
        "LOG_LEVEL": "INFO",
        "LOG_FLUSH_SECONDS": "0",
        **extra,
    }


class GatewayProcess(Replica):
    """`python -m modelrouter serve` on a free port, with `env` and nothing of the caller's."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(gateway_env(**env))
        self.baseline_tasks = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def full_output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    async def up(self) -> GatewayProcess:
        """Wait until it answers; note its idle level of tasks (before any attempt)."""
        async with session() as client:
            await self.ready(client)
        self.baseline_tasks = (await self.scrape()).value("modelrouter_event_loop_tasks") or 0.0
        return self

    def started(self) -> GatewayProcess:
        _wait_up(self.proc, self.full_output, f"{self.url}/health")
        return self

    async def scrape(self) -> Page:
        async with session() as client, client.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return Page(await response.text())

    async def health(self, client: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        async with session() as own, (client or own).get(f"{self.url}/health") as response:
            data: dict[str, Any] = await response.json()
            return data

    def sockets_to(self, port: int) -> int:
        """Sockets this process has open to 127.0.0.1:`port` (any TCP state), from /proc."""
        inodes: set[str] = set()
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = 0
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] in inodes:
                    found += 1
        return found

    def secrets_in_log(self) -> list[str]:
        text = self.full_output()
        return [secret for secret in SECRETS if secret in text]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.full_output().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


class Leaks:
    """What a gateway holds beyond its idle state, read from outside."""

    def __init__(self, page: Page, health: dict[str, Any], upstream: int, baseline: float) -> None:
        self.page = page
        self.values = {
            # the scrape's own connection is the only client connection left open
            "client connections": (page.value("modelrouter_open_connections") or 0) - 1,
            "requests in flight": page.value("modelrouter_requests_in_flight") or 0,
            "active streams": page.value("modelrouter_active_streams") or 0,
            "provider attempts in flight": sum(
                p["in_flight"] for p in health["providers"].values()
            ),
            # an upstream socket not idle in a pool is one nobody will close
            "upstream sockets not in a pool": upstream
            - page.total("modelrouter_upstream_idle_connections"),
            # Attempts run in their requests' tasks: none may outlive its request.
            "tasks over the idle level": (page.value("modelrouter_event_loop_tasks") or 0)
            - baseline,
        }

    @property
    def leaked(self) -> dict[str, float]:
        return {name: value for name, value in self.values.items() if value > 0}


async def no_leaks(gateway: GatewayProcess, mock: MockProcess, *, timeout: float = 8.0) -> Page:
    """Wait until the gateway holds nothing beyond its idle state (and the mock has no stream
    open); return the last scrape. Fails naming what stayed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        page = await gateway.scrape()
        leaks = Leaks(
            page, await gateway.health(), gateway.sockets_to(mock.port), gateway.baseline_tasks
        )
        mock_streams = (await mock.stats())["open_streams"]
        if not leaks.leaked and not mock_streams:
            return page
        if loop.time() > end:
            raise AssertionError(f"leaked: {leaks.leaked}, mock streams open: {mock_streams}")
        await asyncio.sleep(0.1)


async def read_stream(response: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    return parse_sse((await response.read()).decode())


def chunks(events: list[tuple[str, str]]) -> list[str]:
    return [data for kind, data in events if kind == "message" and data != "[DONE]"]


def answered(page: Page, route: str, status: int, method: str = "POST") -> float | None:
    """How many requests to `route` got `status` (None: no such series)."""
    return page.value("modelrouter_requests_total", route=route, method=method, status=str(status))
