"""Shared fixtures: a live mock provider on 127.0.0.1 and gateways configured against it."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp.test_utils import TestClient

from modelrouter.bench.procs import free_port
from modelrouter.config import load_settings
from modelrouter.mock import start_mock
from modelrouter.observability import configure_logging
from modelrouter.web import create_app

configure_logging(level="DEBUG", fmt="json", cache=False)

__all__ = ["free_port"]  # re-exported for the tests, from the benchmark's helpers

# A test whose body has not ended after this long is cancelled, with the stack of every asyncio
# task printed first: a hang (an await nothing will ever complete) then costs one test and says
# where it waits, instead of holding the whole run until CI gives up. One that does not end
# even then (a cancellation swallowed, or a blocking call) ends the run with every thread's
# stack. (A signal would not do: uvloop does not run Python's handlers while it waits.)
HANG_SECONDS = float(os.environ.get("MODELROUTER_TEST_HANG_SECONDS", "300"))
STUCK_SECONDS = 30.0


def _cancel_all(loop: asyncio.AbstractEventLoop, name: str) -> None:
    sys.stderr.write(f"\n{name}: not done after {HANG_SECONDS:g} s; its tasks:\n")
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)
        task.cancel()


def _hung(name: str) -> None:
    loops = [
        o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()
    ]
    for loop in loops:
        loop.call_soon_threadsafe(_cancel_all, loop, name)
    if not loops:
        sys.stderr.write(f"\n{name}: not done after {HANG_SECONDS:g} s\n")
        faulthandler.dump_traceback(all_threads=True)


def _stuck(name: str) -> None:
    sys.stderr.write(f"\n{name}: still running {STUCK_SECONDS:g} s after its cancellation\n")
    faulthandler.dump_traceback(all_threads=True)
    os._exit(70)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    timers = [
        threading.Timer(HANG_SECONDS, _hung, (item.nodeid,)),
        threading.Timer(HANG_SECONDS + STUCK_SECONDS, _stuck, (item.nodeid,)),
    ]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()


GROQ_KEY = "gsk_test_secret_groq_key"
OPENROUTER_KEY = "sk-or-test-secret-openrouter"
CLIENT_KEY = "client-key-0001"
USER = {"messages": [{"role": "user", "content": "hello there"}]}


class Mock:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    def base(self, spec: str = "", flavour: str = "openai") -> str:
        prefix = f"{self.url}/x/{spec}" if spec else self.url
        return f"{prefix}/v1" if flavour == "openai" else prefix

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/_mock/stats") as response:
            data: dict[str, Any] = await response.json()
            return data

    async def count(self, spec: str = "") -> int:
        key = f"/x/{spec}" if spec else ""
        return int((await self.stats())["requests"].get(key, 0))

    async def received(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/_mock/requests") as response:
            data: list[dict[str, Any]] = await response.json()
            return data


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Run every async test on uvloop, the loop `modelrouter serve` runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def mock() -> AsyncIterator[Mock]:
    runner, port = await start_mock(port=0)
    async with aiohttp.ClientSession() as session:
        yield Mock(f"http://127.0.0.1:{port}", session)
    await runner.cleanup()


Gateway = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def gateway(aiohttp_client: Any) -> Gateway:
    """Start a gateway with the given environment (nothing is read from the real environment)."""

    async def start(**env: str) -> TestClient[Any, Any]:
        defaults = {"PROVIDER_ORDER": "groq,openrouter", "BACKOFF_BASE_SECONDS": "5"}
        settings = load_settings(defaults | env)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return start


def two_providers(mock: Mock, groq: str = "", openrouter: str = "", **extra: str) -> dict[str, str]:
    """Groq and OpenRouter both pointing at the mock, each with its own fault spec."""
    return {
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": mock.base(groq),
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
        "OPENROUTER_BASE_URL": mock.base(openrouter),
        "GROQ_RATE_LIMIT": "0",
        "OPENROUTER_RATE_LIMIT": "0",
        **extra,
    }


def parse_sse(text: str) -> list[tuple[str, str]]:
    """Parse an SSE body as a spec-compliant client would: (event type, data) per event."""
    events: list[tuple[str, str]] = []
    kind, data = "message", []
    for line in text.split("\n"):
        if not line:
            if data:
                events.append((kind, "\n".join(data)))
            kind, data = "message", []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        elif line.startswith("event:"):
            kind = line[6:].strip()
    return events


def cut_stream_error(events: list[tuple[str, str]]) -> dict[str, Any]:
    """A cut stream ends with an `error` event and no [DONE]: that event's error object
    (unwrapped from OpenAI's {"error": ...} shape)."""
    assert ("message", "[DONE]") not in events, "a cut stream must not look finished"
    kind, data = events[-1]
    assert kind == "error"
    error: dict[str, Any] = json.loads(data)
    return error.get("error", error)


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout: float = 3.0) -> None:
    """Poll `check` until it holds; fail the test with a clear message if it never does."""

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
