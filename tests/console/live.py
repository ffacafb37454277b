"""A gateway and the mock provider served from a thread of their own (their own uvloop), for
tests whose driver is synchronous (Playwright's sync API): one per test module."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import uvloop
from aiohttp import web

from modelrouter.config import load_settings
from modelrouter.mock import start_mock
from modelrouter.web import create_app

START_TIMEOUT = 30.0


class LiveGateway:
    """`env(mock_url)` gives the gateway's environment once the mock has its port."""

    def __init__(self, env: Callable[[str], dict[str, str]]) -> None:
        self._env = env
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runners: list[web.BaseRunner] = []
        self.url = ""
        self.mock_url = ""

    def start(self) -> LiveGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(START_TIMEOUT)
        return self

    async def _start(self) -> None:
        mock, mock_port = await start_mock(port=0)
        self._runners.append(mock)
        self.mock_url = f"http://127.0.0.1:{mock_port}"
        runner = web.AppRunner(create_app(load_settings(self._env(self.mock_url))))
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def stop() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(START_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(START_TIMEOUT)
        self.loop.close()

    def call(
        self, method: str, path: str, *, key: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One request from the test (not the browser): (status, decoded JSON body)."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
