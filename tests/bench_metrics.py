"""What metrics cost on the hot path: /chat through the gateway, with metrics and with them stubbed.

    .venv/bin/python -m tests.bench_metrics [--requests 2000] [--concurrency 16] [--rounds 3]

The gateway and the mock provider run in this process on loopback (bounded: N requests a run).
"Stubbed" replaces `inc`, `dec`, `set` and `observe` of prometheus-client's metric classes
with no-ops, so every metric call in the gateway is left but does nothing. Rounds alternate the
two modes, each going first every other round, to spread drift evenly. Numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import time
import timeit
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from modelrouter.config import load_settings
from modelrouter.events import Usage
from modelrouter.mock import start_mock
from modelrouter.observability import Metrics, configure_logging
from modelrouter.web import create_app

BODY = {"messages": [{"role": "user", "content": "hello there"}]}
_STUBBED = (
    (Counter, "inc"),
    (Gauge, "inc"),
    (Gauge, "dec"),
    (Gauge, "set"),
    (Histogram, "observe"),
)


@contextlib.contextmanager
def metrics_stubbed(enabled: bool) -> Iterator[None]:
    saved = [(cls, name, getattr(cls, name)) for cls, name in _STUBBED]
    if enabled:
        for cls, name in _STUBBED:
            setattr(cls, name, lambda *_, **__: None)
    try:
        yield
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


async def _load(url: str, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    remaining = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _run(mock_url: str, args: argparse.Namespace, *, stubbed: bool) -> dict[str, float]:
    env = {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": "gsk_bench_key_0000000",
        "GROQ_BASE_URL": f"{mock_url}/v1",
        "GROQ_RATE_LIMIT": "0",
    }
    with metrics_stubbed(stubbed):
        app = create_app(load_settings(env))
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            url = f"http://127.0.0.1:{port}/chat"
            await _load(url, args.concurrency * 4, args.concurrency)  # warm-up
            cpu, wall = time.process_time(), time.perf_counter()
            latencies = await _load(url, args.requests, args.concurrency)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            await runner.cleanup()
    latencies.sort()
    return {
        "rps": args.requests / wall,
        "cpu_us": cpu / args.requests * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def micro() -> float:
    """Microseconds of the metric calls one successful /chat request makes, called directly."""
    metrics = Metrics()
    bound = metrics.provider("groq")
    usage = Usage(2, 8)

    def one_request() -> None:
        bound.set_budget(10)  # admission
        bound.upstream_ok.observe(0.12)  # the upstream call
        bound.success.inc()  # the outcome
        metrics.observe_request("/chat", "POST", 200, 0.13)  # the middleware
        metrics.count_usage("groq", usage)  # the end of the request

    runs = 100_000
    return timeit.timeit(one_request, number=runs) / runs * 1e6


async def main(args: argparse.Namespace) -> None:
    configure_logging(level=args.log_level, stream=None if args.log_to_stderr else io.StringIO())
    mock_runner, mock_port = await start_mock(port=0)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)  # neither always first
            for stubbed in order:
                results[stubbed].append(
                    await _run(f"http://127.0.0.1:{mock_port}", args, stubbed=stubbed)
                )
    finally:
        await mock_runner.cleanup()
    print(f"{args.requests} x POST /chat, concurrency {args.concurrency}, {args.rounds} rounds")
    print(f"{'mode':<10}{'req/s':>10}{'CPU us/req':>12}{'p50 ms':>9}{'p99 ms':>9}  (medians)")
    for stubbed, label in ((False, "metrics"), (True, "stubbed")):
        runs = results[stubbed]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{label:<10}{row['rps']:>10.0f}{row['cpu_us']:>12.0f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
        )
    print(f"metric calls of one /chat request, called directly: {micro():.2f} us")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-to-stderr", action="store_true", help="default: into a buffer")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> Any:
    try:
        import uvloop  # as `modelrouter serve` runs
    except ImportError:  # pragma: no cover
        return asyncio.run(main(parse(argv)))
    return uvloop.run(main(parse(argv)))


if __name__ == "__main__":
    run()
