"""Memory per open stream: hold N streams open through the gateway and compare its RSS."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from modelrouter.bench import procs
from modelrouter.bench.loadgen import chat_body

BATCH = 500  # connections opened at once, so the listen backlog never overflows


async def _hold(
    session: aiohttp.ClientSession, url: str, body: bytes, opened: list[int], release: asyncio.Event
) -> None:
    async with session.post(url, data=body) as response:
        if response.status != 200:
            return
        await response.content.readuntil(b"\n\n")  # the first chunk: the stream is live
        opened.append(1)
        await release.wait()


async def hold_streams(gateway: str, pid: int, count: int, provider: str) -> dict[str, Any]:
    body = chat_body("seed", stream=True, provider=provider, fallback=False)
    url = f"{gateway}/stream"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    before = procs.rss_bytes(pid)
    opened: list[int] = []
    release = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            tasks.extend(
                asyncio.create_task(_hold(session, url, body, opened, release))
                for _ in range(min(BATCH, count - first))
            )
            # Polling is fine here: this waits on another process's progress, once per batch.
            while len(opened) < len(tasks) and time.perf_counter() - started < 120:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let allocations settle before sampling
        during = procs.rss_bytes(pid)
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams_requested": count,
        "streams_open": len(opened),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_open_mb": round(during / 2**20, 1),
        "kb_per_open_stream": round((during - before) / max(len(opened), 1) / 1024, 1),
    }
