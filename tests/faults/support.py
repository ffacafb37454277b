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
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.conftest import free_port, parse_sse
from tests.scrape import Page
from tests.shared_state.support import gateway_env

ROOT = Path(__file__).resolve().parents[2]
GROQ_KEY = "gsk_faultsuite_groq_0123456789abcdef"
OPENROUTER_KEY = "sk-or-v1-faultsuite-openrouter-0123456789"
CLIENT_KEY = "fault-suite-client-key-0001"
USER = {"messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SECRETS = (GROQ_KEY, OPENROUTER_KEY, CLIENT_KEY)


def session() -> aiohttp.ClientSession:
    """A client that opens a connection per request, so none stays open between them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


class Process:
    """A child process whose output goes to a temporary file."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _until_up(process: Process, url: str, *, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    async with session() as client:
        while True:
            if process.proc.poll() is not None:
                raise RuntimeError(f"exited {process.proc.returncode}: {process.output()[-3000:]}")
            try:
                async with client.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > end:
                raise RuntimeError(f"not up: {process.output()[-3000:]}")
            await asyncio.sleep(0.05)


def _wait_up(process: Process, url: str) -> None:
    end = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if process.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"not up: {process.output()[-3000:]}") from None
            time.sleep(0.05)


class MockProcess(Process):
    """`python -m modelrouter mock-provider` on a free port."""

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "mock-provider", "--port", str(self.port)]
        super().__init__([*command, *flags], gateway_env())

    def started(self) -> MockProcess:
        """Wait (blocking: a module's fixture starts it) until it answers."""
        _wait_up(self, f"{self.url}/_mock/stats")
        return self

    def base(self, spec: str = "") -> str:
        """An OpenAI-flavour base URL whose requests get the faults of `spec`."""
        return f"{self.url}/x/{spec}/v1" if spec else f"{self.url}/v1"

    async def stats(self) -> dict[str, Any]:
        async with session() as client, client.get(f"{self.url}/_mock/stats") as response:
            data: dict[str, Any] = await response.json()
            return data

    async def count(self, spec: str) -> int:
        return int((await self.stats())["requests"].get(f"/x/{spec}", 0))


def fault_env(
    mock: MockProcess, groq: str = "", openrouter: str = "", **extra: str
) -> dict[str, str]:
    """Groq then OpenRouter, both on the mock (each with its own fault spec), short timeouts."""
    return {
        "API_KEY": CLIENT_KEY,
        "PROVIDER_ORDER": "groq,openrouter",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": mock.base(groq),
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
        "OPENROUTER_BASE_URL": mock.base(openrouter),
        "GROQ_RATE_LIMIT": "0",
        "OPENROUTER_RATE_LIMIT": "0",
        "FIRST_CHUNK_TIMEOUT": "1",
        "PROVIDER_TIMEOUT": "1.5",
        "MAX_OPERATION_TIMEOUT": "10",
        "BACKOFF_BASE_SECONDS": "2",
        "BACKOFF_MAX_SECONDS": "60",
        "LOG_LEVEL": "INFO",
        "LOG_FLUSH_SECONDS": "0",
        **extra,
    }


class GatewayProcess(Process):
    """`python -m modelrouter serve` on a free port, with `env` and nothing of the caller's."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "serve", "--port", str(self.port)]
        super().__init__(command, gateway_env(**env))
        self.baseline_tasks = 0.0

    async def up(self) -> GatewayProcess:
        await _until_up(self, f"{self.url}/health")
        self.baseline_tasks = (await self.scrape()).value("modelrouter_event_loop_tasks") or 0.0
        return self

    def started(self) -> GatewayProcess:
        """Wait (blocking: for a module's fixture) until it answers."""
        _wait_up(self, f"{self.url}/health")
        return self

    async def scrape(self) -> Page:
        async with session() as client, client.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return Page(await response.text())

    async def health(self) -> dict[str, Any]:
        async with session() as client, client.get(f"{self.url}/health") as response:
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
        text = self.output()
        return [secret for secret in SECRETS if secret in text]

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


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
            # Each provider's job scheduler (aiojobs) starts one watcher task at its first
            # attempt and keeps it: that many above the level measured before any attempt.
            "tasks over the idle level": (page.value("modelrouter_event_loop_tasks") or 0)
            - baseline
            - len(health["providers"]),
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


def error_data(events: list[tuple[str, str]]) -> dict[str, Any]:
    """The data of a cut stream's final `event: error` (unwrapped from OpenAI's shape)."""
    assert ("message", "[DONE]") not in events, "a cut stream must not look finished"
    kind, data = events[-1]
    assert kind == "error", events
    body: dict[str, Any] = json.loads(data)
    return body.get("error", body)


def chunks(events: list[tuple[str, str]]) -> list[str]:
    return [data for kind, data in events if kind == "message" and data != "[DONE]"]


def now() -> float:
    return time.time()


def answered(page: Page, route: str, status: int, method: str = "POST") -> float | None:
    """How many requests to `route` got `status` (None: no such series)."""
    return page.value("modelrouter_requests_total", route=route, method=method, status=str(status))
