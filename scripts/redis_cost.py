"""Measure what the Redis backend costs a request: round trips and added latency.

    .venv/bin/python scripts/redis_cost.py [--requests 2000] [--concurrency 1]

Starts a mock provider, a throwaway redis-server (so nothing else's traffic is counted) and one
gateway process per backend (memory, then redis), sends the same /chat and /stream requests to
each from one client, and prints p50/p99 latencies and the Redis commands per request (from
INFO commandstats). Everything runs on 127.0.0.1; figures depend on the machine.
"""

# A measuring script: it starts known local processes and blocks on purpose while they start.
# ruff: noqa: S603, S607, ASYNC220, ASYNC251

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp
import redis

from modelrouter.bench.procs import free_port

# Commands the gateway sends itself; everything else in commandstats runs inside its scripts.
ROUND_TRIPS = frozenset({"evalsha", "zrem", "hmget", "ping", "script|load", "evalsha_ro"})
BODY = {"messages": [{"role": "user", "content": "hello"}]}


async def wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def commands(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def run(url: str, route: str, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            started = time.perf_counter()
            async with session.post(url + route, json=BODY) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def per_trip(per: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in per.items() if k in ROUND_TRIPS}


def describe(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    return f"{name:>20}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (n={len(ordered)})"


async def measure(args: argparse.Namespace) -> None:
    mock_port, redis_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "modelrouter", "mock-provider", "--port", str(mock_port)],
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        await wait_http(f"http://127.0.0.1:{mock_port}/_mock/stats")
        admin = redis.Redis(port=redis_port)
        for _ in range(100):
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        for backend in ("memory", "redis"):
            await one_backend(backend, args, mock_port, redis_port, admin)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


async def one_backend(
    backend: str, args: argparse.Namespace, mock_port: int, redis_port: int, admin: redis.Redis
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "GROQ_RATE_LIMIT": "1000000",  # limited (so the GCRA script runs) but never reached
        "MAX_CONCURRENT_STREAMS": "1000",
        "LOG_LEVEL": "WARNING",
    }
    if backend == "redis":
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelrouter", "serve", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_http(url + "/health")
        await run(url, "/chat", 200, args.concurrency)  # warm-up
        for route in ("/chat", "/stream"):
            before = commands(admin)
            latencies = await run(url, route, args.requests, args.concurrency)
            after = commands(admin)
            print(describe(f"{backend} {route}", latencies))
            if backend == "redis":
                used = {k: after[k] - before.get(k, 0) for k in after if k != "info"}
                per = {k: round(v / args.requests, 2) for k, v in used.items() if v}
                trips = sum(v for k, v in per.items() if k in ROUND_TRIPS)
                inside = {k: v for k, v in per.items() if k not in ROUND_TRIPS}
                print(f"{'':>20}  round trips per request: {trips:g} {per_trip(per)}")
                print(f"{'':>20}  commands run inside the scripts: {inside}")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
