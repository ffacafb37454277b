"""SIGTERM at each stage: idle, draining, mid-stream, before the first chunk, during a fallback,
during a stall, past SHUTDOWN_TIMEOUT_SECONDS, and a second signal. The process must exit 0
within DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS (plus a little), serve what arrives while it
drains, and end what it cannot finish with a retryable `shutdown` error."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

import aiohttp
import pytest

from modelrouter.mock.text import reply_tokens
from tests.conftest import cut_stream_error, free_port, parse_sse, wait_until
from tests.faults.conftest import Gateways
from tests.faults.support import (
    AUTH,
    ROOT,
    USER,
    GatewayProcess,
    MockProcess,
    chunks,
    fault_env,
    session,
)
from tests.shared_state.support import RedisServer, gateway_env

GRACE = 3.0  # beyond DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS: the close grace and start-up noise


class OpenStream:
    """A stream being read while the test signals the gateway."""

    def __init__(self, gateway: GatewayProcess, route: str = "/stream") -> None:
        self.gateway = gateway
        self.route = route
        self.session = session()
        self.response: aiohttp.ClientResponse | None = None
        self.received = b""

    async def start(self, chunks_wanted: int = 1) -> OpenStream:
        body: dict[str, Any] = dict(USER)
        if self.route != "/stream":
            body |= {"model": "auto", "stream": True}
        self.response = await self.session.post(
            f"{self.gateway.url}{self.route}", json=body, headers=AUTH
        )
        assert self.response.status == 200
        while self.received.count(b"\n\n") < chunks_wanted + (self.route != "/stream"):
            self.received += await asyncio.wait_for(self.response.content.readany(), 10)
        return self

    async def rest(self) -> list[tuple[str, str]]:
        assert self.response is not None
        self.received += await asyncio.wait_for(self.response.content.read(), 30)
        await self.session.close()
        return parse_sse(self.received.decode())


async def exit_code(gateway: GatewayProcess, within: float) -> int:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, gateway.wait, within)


def shutdown_env(mock: MockProcess, groq: str = "", **extra: str) -> dict[str, str]:
    return fault_env(mock, groq=groq, **{"DRAIN_SECONDS": "0", **extra})


async def ready_status(gateway: GatewayProcess) -> int:
    async with session() as client, client.get(f"{gateway.url}/ready") as response:
        return response.status


async def draining(gateway: GatewayProcess) -> None:
    """`/ready` answers 503 (at once after the signal)."""

    async def not_ready() -> bool:
        return await ready_status(gateway) == 503

    await wait_until(not_ready, timeout=1.0)


async def test_sigterm_when_idle_exits_0_at_once(mock: MockProcess, gateways: Gateways) -> None:
    gateway = await gateways(shutdown_env(mock))
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    assert await exit_code(gateway, GRACE) == 0
    assert time.monotonic() - started < GRACE


async def test_sigterm_drains_serving_what_arrives_then_closes(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(shutdown_env(mock, DRAIN_SECONDS="2"))
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    await draining(gateway)
    async with (
        aiohttp.ClientSession() as client,  # keep-alive: the gateway is the one to close
        client.post(f"{gateway.url}/chat", json=USER, headers=AUTH) as response,
    ):
        assert response.status == 200  # still served while the balancer moves away
        assert response.headers["Connection"] == "close"  # and told to go elsewhere next
        assert (await response.json())["provider"] == "groq"
    assert time.monotonic() - started < 2
    assert await exit_code(gateway, 2 + GRACE) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await ready_status(gateway)


async def test_sigterm_mid_stream_lets_it_finish_within_shutdown_timeout(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(shutdown_env(mock, "token_delay=0.1,tokens=20"))
    stream = await OpenStream(gateway).start()
    gateway.signal(signal.SIGTERM)
    events = await stream.rest()
    assert chunks(events) == reply_tokens(20)
    assert events[-1] == ("message", "[DONE]")
    assert await exit_code(gateway, GRACE) == 0


async def test_sigterm_ends_streams_past_shutdown_timeout_with_a_retryable_error(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = shutdown_env(mock, "token_delay=0.2,tokens=500", SHUTDOWN_TIMEOUT_SECONDS="1")
    gateway = await gateways(env)
    seed = await OpenStream(gateway).start()
    openai = await OpenStream(gateway, "/v1/chat/completions").start()
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    seed_error = cut_stream_error(await seed.rest())
    assert seed_error["type"] == "shutdown"
    assert seed_error["retryable"] is True
    assert seed_error["request_id"]
    openai_error = cut_stream_error(await openai.rest())
    assert openai_error["code"] == "shutdown"
    assert openai_error["type"] == "server_error"
    assert openai_error["retryable"] is True
    assert await exit_code(gateway, 1 + GRACE) == 0
    assert time.monotonic() - started < 1 + GRACE
    assert (await mock.stats())["open_streams"] == 0  # the upstream calls were closed
    assert any(line.get("message") == "shutdown_timeout" for line in gateway.log_lines())


async def test_sigterm_before_the_first_chunk_answers_503_shutdown(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = shutdown_env(
        mock, "first_delay=30", SHUTDOWN_TIMEOUT_SECONDS="1", FIRST_CHUNK_TIMEOUT="20"
    )
    env["PROVIDER_TIMEOUT"] = "20"
    gateway = await gateways(env)

    async def post(route: str) -> tuple[int, dict[str, Any], str | None]:
        async with (
            session() as client,
            client.post(f"{gateway.url}{route}", json=USER, headers=AUTH) as response,
        ):
            return response.status, await response.json(), response.headers.get("Retry-After")

    requests = [asyncio.create_task(post(route)) for route in ("/stream", "/chat")]

    async def both_waiting() -> bool:
        return bool(
            (await mock.stats())["open_streams"] == 1 and await mock.count("first_delay=30") == 2
        )

    await wait_until(both_waiting)
    gateway.signal(signal.SIGTERM)
    for status, body, retry_after in await asyncio.gather(*requests):
        assert status == 503
        assert body["error"]["type"] == "shutdown"
        assert retry_after == "1"
    assert await exit_code(gateway, 1 + GRACE) == 0


async def test_sigterm_during_a_fallback_lets_the_fallback_answer(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = shutdown_env(mock, "status=500", OPENROUTER_BASE_URL=mock.base("first_delay=0.8"))
    gateway = await gateways(env)
    stream = OpenStream(gateway)
    started = asyncio.create_task(stream.start())

    async def falling_over() -> bool:
        return bool(await mock.count("first_delay=0.8") == 1)

    await wait_until(falling_over)
    gateway.signal(signal.SIGTERM)
    await started
    events = await stream.rest()
    assert events[-1] == ("message", "[DONE]")
    assert await exit_code(gateway, GRACE) == 0


async def test_sigterm_during_a_stall_ends_the_stream_within_shutdown_timeout(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = shutdown_env(mock, "stall_after=2", SHUTDOWN_TIMEOUT_SECONDS="1")
    env["PROVIDER_TIMEOUT"] = "30"
    gateway = await gateways(env)
    stream = await OpenStream(gateway).start(2)
    gateway.signal(signal.SIGTERM)
    events = await stream.rest()
    assert chunks(events) == reply_tokens(2)
    assert cut_stream_error(events)["type"] == "shutdown"
    assert await exit_code(gateway, 1 + GRACE) == 0


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_ends_the_drain_at_once(
    mock: MockProcess, gateways: Gateways, second: int
) -> None:
    env = shutdown_env(
        mock, "token_delay=0.2,tokens=500", DRAIN_SECONDS="60", SHUTDOWN_TIMEOUT_SECONDS="60"
    )
    gateway = await gateways(env)
    stream = await OpenStream(gateway).start()
    gateway.signal(signal.SIGTERM)
    await draining(gateway)
    started = time.monotonic()
    gateway.signal(second)
    assert cut_stream_error(await stream.rest())["type"] == "shutdown"
    assert await exit_code(gateway, GRACE) == 0
    assert time.monotonic() - started < GRACE


class WorkerGroup(GatewayProcess):
    """`serve --workers 2` in a process group of its own, as systemd and a terminal run it."""

    # Its own process (a session of its own), so not Replica.__init__.
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.baseline_tasks = 0.0
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the test
        command = [sys.executable, "-m", "modelrouter", "serve", "--workers", "2"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=gateway_env(**env),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal_group(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    async def both_listening(self) -> None:
        async def listening() -> bool:
            lines = self.log_lines()
            return sum(line.get("message") == "listening" for line in lines) == 2

        await wait_until(listening, timeout=20)


@pytest.mark.redis
async def test_one_sigterm_to_the_process_group_of_serve_workers_is_one_graceful_shutdown(
    mock: MockProcess,
) -> None:
    """systemd's default (and Ctrl-C's SIGINT) signals every process of the group: each worker
    gets the signal itself and through its parent, and must still drain, letting its stream
    finish, rather than take the second copy for an operator's hurry."""
    redis_server = RedisServer().start()
    group = WorkerGroup(shutdown_env(mock, "token_delay=0.1,tokens=20", REDIS_URL=redis_server.url))
    try:
        await group.both_listening()
        stream = await OpenStream(group).start()
        group.signal_group(signal.SIGTERM)
        events = await stream.rest()
        assert chunks(events) == reply_tokens(20)
        assert events[-1] == ("message", "[DONE]")
        assert await exit_code(group, GRACE) == 0
        assert "shutdown_hurried" not in [line.get("message") for line in group.log_lines()]
    finally:
        if group.proc.poll() is None:
            group.signal_group(signal.SIGKILL)
            group.proc.wait()
        group.log.close()
        redis_server.kill()
