"""A bounded HTTP load generator for chat requests (JSON or SSE), used by `modelrouter bench`.

Each of `concurrency` workers sends requests back to back until `duration` seconds pass or
`requests` have been sent, whichever comes first. Latency is measured per request; for streams
also the time to the first data event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import msgspec


class Measurement(msgspec.Struct):
    """What the suite compares: throughput, latency marks (ms), errors."""

    requests: int
    rate: float
    p50: float
    p90: float
    p99: float
    errors: dict[str, int]
    first_byte_p50: float | None = None
    mean: float | None = None


class LoadResult(msgspec.Struct):
    requests: int
    seconds: float
    errors: dict[str, int]
    latencies: list[float]
    first_bytes: list[float]

    @property
    def ok(self) -> int:
        return self.requests - sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.rate, 1),
            "latency_ms": percentiles(self.latencies),
        }
        if self.first_bytes:
            data["first_byte_ms"] = percentiles(self.first_bytes)
        return data

    def measurement(self) -> Measurement:
        marks = percentiles(self.latencies) or {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
        first = percentiles(self.first_bytes).get("p50")
        return Measurement(
            self.requests,
            self.rate,
            marks["p50"],
            marks["p90"],
            marks["p99"],
            dict(self.errors),
            first,
            marks["mean"],
        )


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99 (nearest rank) and mean, in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000

    mean = sum(ordered) / len(ordered) * 1000
    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "mean": mean}


class _Run:
    def __init__(self, *, requests: int, deadline: float) -> None:
        self.left = requests
        self.deadline = deadline
        self.sent = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.first_bytes: list[float] = []

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        self.sent += 1
        return True


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, run: _Run
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body) as response:
            if response.status != 200:
                await response.read()
                run.errors[f"http_{response.status}"] += 1
                return
            if not stream:
                await response.read()
            else:
                first = True
                tail = b""
                async for data in response.content.iter_any():
                    if first:
                        run.first_bytes.append(time.perf_counter() - started)
                        first = False
                    tail = (tail + data)[-64:]
                if b"[DONE]" not in tail:
                    run.errors["stream_cut"] += 1
                    return
    except (aiohttp.ClientError, TimeoutError) as exc:
        run.errors[type(exc).__name__] += 1
        return
    run.latencies.append(time.perf_counter() - started)


async def run_load(
    url: str,
    body: bytes,
    *,
    concurrency: int = 16,
    duration: float = 10.0,
    requests: int = 1_000_000,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> LoadResult:
    """Send load to `url`; bounded by `duration` seconds and `requests` count."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        connector=connector, headers=all_headers, timeout=client_timeout
    ) as session:
        started = time.perf_counter()
        run = _Run(requests=requests, deadline=started + duration)

        async def worker() -> None:
            while run.take():
                await _one(session, url, body, stream, run)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(run.sent, elapsed, dict(run.errors), run.latencies, run.first_bytes)


def chat_body(fmt: str, *, stream: bool, model: str | None = None, **extra: Any) -> bytes:
    """A small chat request in the seed format (`seed`) or OpenAI's (`openai`)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hello"}], **extra}
    if fmt == "openai":
        body["model"] = model or "auto"
        body["stream"] = stream
    elif model is not None:
        body["model"] = model
    return msgspec.json.encode(body)
