"""The server in this process (`serve()`), with raw connections: the bounds on every client
connection, the HTTP parser's errors, and the shutdown's stages.

The fault suite (tests/faults/) proves the same against real processes; these run in-process
so that the suite sees which lines they cover, and use the in-process mock provider."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from modelrouter.config import load_settings
from modelrouter.web.connections import MIN_CONNECTIONS, LogLimiter, connection_limit
from modelrouter.web.server import Signals, serve
from tests.conftest import GROQ_KEY, OPENROUTER_KEY, USER, Mock, free_port, parse_sse
from tests.scrape import Page

Server = Callable[..., Awaitable["Running"]]


class Running:
    def __init__(self, port: int, stop: asyncio.Event, hurry: asyncio.Event) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stop = stop
        self.hurry = hurry
        self.task: asyncio.Task[None] | None = None

    async def exchange(self, data: bytes, *, timeout: float = 10.0) -> bytes:
        """Send `data` on a new connection; everything received until the server closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()

    async def metrics(self) -> Page:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/metrics", headers={"Connection": "close"}) as response,
        ):
            return Page(await response.text())


@pytest.fixture
async def server(mock: Mock) -> AsyncIterator[Server]:
    running: list[Running] = []

    async def start(groq: str = "", **env: str) -> Running:
        port = free_port()
        settings = load_settings(
            {
                "PORT": str(port),
                "PROVIDER_ORDER": "groq,openrouter",
                "GROQ_API_KEY": GROQ_KEY,
                "GROQ_BASE_URL": mock.base(groq),
                "OPENROUTER_API_KEY": OPENROUTER_KEY,
                "OPENROUTER_BASE_URL": mock.base(),
                "GROQ_RATE_LIMIT": "0",
                "OPENROUTER_RATE_LIMIT": "0",
                "HEADER_TIMEOUT_SECONDS": "0.3",
                "KEEPALIVE_TIMEOUT_SECONDS": "0.5",
                **env,
            }
        )
        ready, stop, hurry = asyncio.Event(), asyncio.Event(), asyncio.Event()
        server = Running(port, stop, hurry)
        server.task = asyncio.create_task(serve(settings, ready=ready, stop=stop, hurry=hurry))
        await asyncio.wait_for(ready.wait(), 10)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop.set()
        server.hurry.set()
        assert server.task is not None
        await asyncio.wait_for(server.task, 10)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return data


def post(path: str, body: bytes, *, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode() + body


async def test_a_silent_connection_gets_a_408_and_is_closed(server: Server) -> None:
    running = await server()
    response = await running.exchange(b"")
    assert status_of(response) == 408
    assert body_of(response)["error"]["type"] == "request_timeout"
    page = await running.metrics()
    assert page.value("modelrouter_connection_timeouts_total", kind="header") == 1


async def test_a_late_body_fails_the_handler_read_with_a_408(server: Server) -> None:
    running = await server()
    response = await running.exchange(post("/chat", b"{", length=100))
    assert status_of(response) == 408
    assert "HEADER_TIMEOUT_SECONDS" in body_of(response)["error"]["message"]


async def test_a_body_that_arrives_in_time_is_served(server: Server) -> None:
    running = await server()
    body = json.dumps(USER).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(post("/chat", b"", length=len(body)))
    await asyncio.sleep(0.1)
    writer.write(body)  # the rest, within HEADER_TIMEOUT_SECONDS
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert status_of(head) == 200


async def test_an_idle_keep_alive_connection_is_closed_and_counted(server: Server) -> None:
    running = await server()
    response = await running.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 200  # then closed by the keep-alive timeout
    page = await running.metrics()
    assert page.value("modelrouter_connection_timeouts_total", kind="keepalive") == 1


async def test_at_the_cap_an_idle_connection_makes_room_for_a_new_one(server: Server) -> None:
    running = await server(MAX_CONNECTIONS="3", HEADER_TIMEOUT_SECONDS="30")
    idle = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(5)]
    try:
        response = await running.exchange(b"GET /health HTTP/1.0\r\n\r\n")
        assert status_of(response) == 200
        page = await running.metrics()
        # The 4th and 5th idle connections each took an older one's place, then /health did;
        # the scrape found room (/health had closed).
        assert page.value("modelrouter_evicted_connections_total") == 3
        assert page.value("modelrouter_connection_limit") == 3
    finally:
        for _, writer in idle:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_shed(server: Server) -> None:
    running = await server(
        "first_delay=5", MAX_CONNECTIONS="2", FIRST_CHUNK_TIMEOUT="20", PROVIDER_TIMEOUT="20"
    )
    body = json.dumps(USER).encode()
    busy = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(2)]
    for _, writer in busy:
        writer.write(post("/chat", body))
    await asyncio.sleep(0.3)
    assert await running.exchange(b"GET /health HTTP/1.0\r\n\r\n") == b""
    for _, writer in busy:
        writer.close()
    await asyncio.sleep(0.2)
    page = await running.metrics()
    assert page.value("modelrouter_rejected_connections_total") == 1


async def test_a_parser_error_is_a_json_400_and_one_warning(server: Server) -> None:
    running = await server()
    with capture_logs() as logs:
        response = await running.exchange(b"GET /health HTTP/1.1\r\nX-A: marker\x01\r\n\r\n")
    assert status_of(response) == 400
    assert b"marker" not in response
    assert body_of(response)["error"]["type"] == "bad_request"
    warnings = [line for line in logs if line["event"] == "bad_http_request"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "exc_info" not in warnings[0]


def with_headers(request: bytes, *headers: bytes) -> bytes:
    return request.replace(b"Host: x\r\n", b"Host: x\r\n" + b"".join(h + b"\r\n" for h in headers))


def head_of(response: bytes) -> dict[str, str]:
    lines = response.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    return {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/chat", {"type", "message", "request_id"}),
        ("/v1/chat/completions", {"message", "type", "param", "code"}),
        ("/nowhere", {"type", "message", "request_id"}),
    ],
)
async def test_an_unknown_expectation_is_a_json_417_in_the_routes_format_echoing_nothing(
    server: Server, path: str, fields: set[str]
) -> None:
    running = await server()
    request = with_headers(
        post(path, b"{}"), b"Expect: marker-<b>", b"X-Request-ID: given-id-1", b"Connection: close"
    )
    response = await running.exchange(request)
    assert status_of(response) == 417
    head = head_of(response)
    assert head["content-type"] == "application/json"
    assert head["x-request-id"] == "given-id-1"
    assert b"marker" not in response
    assert set(body_of(response)["error"]) == fields
    page = await running.metrics()  # counted as any other answer
    assert page.total("modelrouter_requests_total", status="417") == 1


async def test_expect_100_continue_still_gets_its_interim_answer(server: Server) -> None:
    running = await server()
    body = json.dumps(USER).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(with_headers(post("/chat", b"", length=len(body)), b"Expect: 100-continue"))
    assert (
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert status_of(head) == 200


# What aiohttp would answer on its own, each as a raw request whose "marker" must not come back.
DEFAULT_ANSWERS = {
    "unknown route": (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nX-A: marker\r\n\r\n", 404),
    "wrong method": (b"DELETE /chat HTTP/1.1\r\nHost: x\r\nX-A: marker\r\n\r\n", 405),
    "unknown expectation": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: marker\r\n\r\n",
        417,
    ),
    "body too large": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"800\r\n"  # 2048 bytes, above MAX_BODY_BYTES
        + (b"marker" * 342)[:2048]
        + b"\r\n0\r\n\r\n",
        413,
    ),
    "bad header byte": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: marker\x01\r\n\r\n", 400),
    "bad method": (b"M@RKER /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad chunking": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nmarker\r\n",
        400,
    ),
    "line too long": (b"GET /" + b"marker" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(DEFAULT_ANSWERS))
async def test_every_answer_aiohttp_would_give_is_our_json_error_with_a_request_id(
    server: Server, case: str
) -> None:
    running = await server(MAX_BODY_BYTES="1024")
    request, status = DEFAULT_ANSWERS[case]
    response = await running.exchange(with_headers(request, b"Connection: close"))
    assert status_of(response) == status
    head = head_of(response)
    assert head["content-type"] == "application/json"
    assert head["x-request-id"]
    assert body_of(response)["error"]["message"]
    assert b"marker" not in response.lower()


async def test_a_body_that_does_not_decompress_is_a_400(server: Server) -> None:
    running = await server()
    request = post("/chat", b"not gzip at all").replace(
        b"Content-Type", b"Content-Encoding: gzip\r\nContent-Type"
    )
    with capture_logs() as logs:
        response = await running.exchange(request)
        await asyncio.sleep(0.1)
    assert status_of(response) == 400
    assert not [line for line in logs if line["log_level"] == "error"]


async def test_sigterm_serves_during_the_drain_then_ends_long_streams(server: Server) -> None:
    running = await server(
        "token_delay=0.1,tokens=500", DRAIN_SECONDS="0.5", SHUTDOWN_TIMEOUT_SECONDS="0.3"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.url}/stream", json=USER) as streaming,
    ):
        await streaming.content.readuntil(b"\n\n")
        running.stop.set()
        await asyncio.sleep(0.1)
        async with session.get(f"{running.url}/ready") as response:
            assert response.status == 503
        async with session.post(f"{running.url}/chat", json=USER) as response:
            assert response.status == 200
            assert response.headers["Connection"] == "close"
        events = parse_sse((await streaming.read()).decode())
    kind, data = events[-1]
    assert kind == "error"
    assert json.loads(data)["type"] == "shutdown"
    assert json.loads(data)["retryable"] is True
    assert running.task is not None
    await asyncio.wait_for(running.task, 5)


async def test_hurry_ends_the_drain_at_once(server: Server) -> None:
    running = await server(DRAIN_SECONDS="60", SHUTDOWN_TIMEOUT_SECONDS="60")
    running.stop.set()
    await asyncio.sleep(0.05)
    running.hurry.set()
    assert running.task is not None
    await asyncio.wait_for(running.task, 5)


def test_the_connection_cap_defaults_to_what_descriptors_leave() -> None:
    settings = load_settings({"PROVIDER_ORDER": "groq", "GROQ_API_KEY": "k"})
    # 1024 descriptors: 64 kept aside, 256 for groq's connections.
    assert connection_limit(settings, descriptors=1024) == 1024 - 64 - 256
    capped = load_settings(
        {"PROVIDER_ORDER": "groq", "GROQ_API_KEY": "k", "GROQ_MAX_CONCURRENCY": "9999"}
    )
    # the lower of MAX_CONCURRENCY and MAX_CONNECTIONS (256) bounds groq's connections
    assert connection_limit(capped, descriptors=1024) == 1024 - 64 - 256
    many = load_settings(
        {
            "PROVIDER_ORDER": "groq",
            "GROQ_API_KEY": "k",
            "GROQ_MAX_CONCURRENCY": "9999",
            "GROQ_MAX_CONNECTIONS": "9999",
        }
    )
    assert connection_limit(many, descriptors=1024) == (1024 - 64) // 2  # one upstream each
    assert connection_limit(settings, descriptors=40) == MIN_CONNECTIONS
    redis = load_settings({"REDIS_URL": "redis://127.0.0.1:6379/0", "PROVIDER_ORDER": "ollama"})
    assert connection_limit(redis, descriptors=4096) == 4096 - 64 - 66 - 256
    fixed = load_settings({"MAX_CONNECTIONS": "7"})
    assert connection_limit(fixed, descriptors=1024) == 7


def test_the_log_limiter_allows_a_burst_then_one_a_second() -> None:
    limiter = LogLimiter(burst=3, every=3600)
    assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]
    assert limiter.suppressed == 2


async def test_a_client_gone_while_its_answer_is_written_is_a_499_not_an_error() -> None:
    """The soak found it: a write to a client that had just left raised out of the handler,
    was logged as an unhandled error with its traceback, and counted as a 500."""
    from aiohttp import web
    from aiohttp.client_exceptions import ClientConnectionResetError

    from modelrouter.observability import Metrics
    from modelrouter.web.accounting import ACCOUNTING, Accounting
    from modelrouter.web.connections import Guard, GuardedRunner
    from modelrouter.web.middleware import front

    metrics = Metrics()
    app = web.Application(middlewares=[front])
    app[ACCOUNTING] = Accounting(metrics)

    async def gone(request: web.Request) -> web.StreamResponse:
        raise ClientConnectionResetError("Cannot write to closing transport")

    app.router.add_get("/gone", gone)
    runner = GuardedRunner(app, Guard(load_settings({}), metrics, max_connections=10))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing sent
            writer.close()
    finally:
        await runner.cleanup()
    app[ACCOUNTING].drain()
    assert metrics.requests.labels("/gone", "GET", "499")._value.get() == 1
    assert not [line for line in logs if line["log_level"] == "error"]


WORKER = """
import signal, sys, time
def said(word):
    def on(signum, frame):
        print(word, flush=True)
        if word == "hurry": sys.exit(0)
    return on
signal.signal(signal.SIGUSR1, said("drain"))
signal.signal(signal.SIGUSR2, said("hurry"))
signal.signal(signal.SIGTERM, said("sigterm"))
print("up", flush=True)
while True: time.sleep(0.02)
"""


def _next_line(proc: subprocess.Popen[bytes]) -> bytes:
    """The worker's next line (b"" if none comes: the test fails rather than hangs)."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 10)
    return proc.stdout.readline() if readable else b""


def test_the_worker_pool_tells_its_workers_to_drain_at_once_then_to_hurry() -> None:
    """`serve --workers N`: the parent tells each worker from its signal handler (not after its
    next poll, while /ready still says 200), with signals that name the step: never a SIGTERM,
    which a worker that got the group's own SIGTERM would count as its second."""
    from modelrouter.workers import WorkerPool

    pool = WorkerPool([sys.executable, "-c", WORKER], dict(os.environ), 1, stop_timeout=5)
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE)
    pool.procs = [proc]
    try:
        assert _next_line(proc) == b"up\n"
        pool._stop(signal.SIGTERM, None)  # the first: drain, told before the handler returns
        assert _next_line(proc) == b"drain\n"
        pool._stop(signal.SIGINT, None)  # any later one: hurry
        assert _next_line(proc) == b"hurry\n"
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


async def test_a_group_signal_and_the_parents_drain_are_one_graceful_shutdown() -> None:
    stop, hurry = asyncio.Event(), asyncio.Event()
    signals = Signals(stop, hurry)
    signals.signalled()  # SIGTERM to the process group: this worker got it...
    signals.drain()  # ...and its parent passed it on
    assert stop.is_set()
    assert not hurry.is_set()
    signals.drain()  # told twice: still the same drain
    assert not hurry.is_set()
    with capture_logs() as logs:
        signals.signalled()  # a second signal, later: hurry
    assert hurry.is_set()
    assert [line["event"] for line in logs] == ["shutdown_hurried"]


async def test_the_parents_drain_first_leaves_the_workers_own_signal_a_first_one() -> None:
    stop, hurry = asyncio.Event(), asyncio.Event()
    signals = Signals(stop, hurry)
    signals.drain()  # the parent was faster than the group's signal to this worker
    signals.signalled()
    assert stop.is_set()
    assert not hurry.is_set()
    signals.hurry()  # the parent's second
    assert hurry.is_set()
