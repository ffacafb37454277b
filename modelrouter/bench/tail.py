"""`make bench`'s tail scenario: hedged streams against a first deployment that is, now and
then, slow to its first byte.

Two deployments in order on the mock: the first (`groq`) delays its first byte by 2 s on 3% of
its requests (the mock's `slow_share`, spread evenly by count), the second (`openrouter`) is
healthy. The same load, streams one after another from `concurrency` clients, goes through a
gateway with HEDGE=off and one with HEDGE=on (the p95 delay, its defaults): p50, p95 and p99 of
the time to first byte the client sees, and the extra upstream requests (the second
deployment's, as a share of the requests sent). A warm-up, not measured, gives the hedge delay
its samples first (it is HEDGE_AFTER_MS until 50 exist).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import ExitStack
from typing import Any, Final

import msgspec

from modelrouter.bench import procs
from modelrouter.bench.loadgen import chat_body, run_load

NAME: Final = "tail: first byte 2 s late on 3%, hedging off and on"
SLOW: Final = "/x/slow_share=0.03,slow_delay=2,tokens=5"  # the first deployment
SECOND: Final = "/x/tokens=5"  # the second, healthy
REQUESTS: Final = 3000
WARM_UP: Final = 200
CONCURRENCY: Final = 8
MAX_SECONDS: Final = 120.0  # per measured run: bounded whatever the machine's load


def tail_env(mock: str, hedge: str) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq,openrouter",
        "GROQ_BASE_URL": f"{mock}{SLOW}/v1",
        "OPENROUTER_BASE_URL": f"{mock}{SECOND}/v1",
        "GROQ_API_KEY": "bench-key",
        "OPENROUTER_API_KEY": "bench-key",
        "GROQ_RATE_LIMIT": "0",
        "OPENROUTER_RATE_LIMIT": "0",
        "FIRST_CHUNK_TIMEOUT": "10",
        "MAX_CONCURRENT_STREAMS": "1000",
        "LOG_LEVEL": "WARNING",
        "API_KEY": "",
        "REDIS_URL": "",
        "HEDGE": hedge,
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own loopback
        return json.loads(response.read())


def upstream_counts(mock: str) -> tuple[int, int]:
    """Requests the mock has seen on the first and the second deployment's prefix."""
    seen = _get(f"{mock}/_mock/stats")["requests"]
    return seen.get(SLOW, 0), seen.get(SECOND, 0)


def ranks(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000, 1)

    return {"p50": rank(0.5), "p95": rank(0.95), "p99": rank(0.99)}


def measure(mock: str, url: str, *, requests: int, concurrency: int) -> dict[str, Any]:
    body = chat_body("seed", stream=True)
    stream = f"{url}/stream"
    warm_up = min(WARM_UP, requests)  # a short run (the suite's test) warms up as long
    asyncio.run(run_load(stream, body, concurrency=concurrency, requests=warm_up, stream=True))
    first_before, second_before = upstream_counts(mock)
    result = asyncio.run(
        run_load(
            stream,
            body,
            concurrency=concurrency,
            duration=MAX_SECONDS,
            requests=requests,
            stream=True,
        )
    )
    first_after, second_after = upstream_counts(mock)
    sent = result.requests
    extra = second_after - second_before
    return {
        "requests": sent,
        "errors": dict(result.errors),
        "seconds": round(result.seconds, 1),
        "first_byte_ms": ranks(result.first_bytes),
        "first_deployment_requests": first_after - first_before,
        "extra_upstream_requests": extra,
        "extra_share": round(extra / sent, 4) if sent else None,
        "hedges": _get(f"{url}/health").get("hedges"),
    }


def run_tail(
    mock: str, *, requests: int = REQUESTS, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    """Both gateways, one after the other (hedging off first), on the running mock."""
    figures: dict[str, Any] = {"scenario": NAME, "concurrency": concurrency}
    for hedge in ("off", "on"):
        port = procs.free_port()
        with ExitStack() as own:
            own.enter_context(
                procs.child(["serve", "--port", str(port)], port, tail_env(mock, hedge))
            )
            url = f"http://127.0.0.1:{port}"
            figures[f"hedge_{hedge}"] = measure(
                mock, url, requests=requests, concurrency=concurrency
            )
    return figures


def tail_lines(figures: dict[str, Any]) -> str:
    lines = [f"\n{figures['scenario']} ({figures['concurrency']} clients)\n"]
    lines.append("hedge  requests  errors  ttfb p50 ms  p95 ms  p99 ms  extra upstream\n")
    for hedge in ("off", "on"):
        run = figures[f"hedge_{hedge}"]
        marks = run["first_byte_ms"]
        errors = sum(run["errors"].values())
        share = run["extra_share"]
        lines.append(
            f"{hedge:<6} {run['requests']:>8}  {errors:>6}  {marks.get('p50', 0):>11}  "
            f"{marks.get('p95', 0):>6}  {marks.get('p99', 0):>6}  "
            f"{run['extra_upstream_requests']} ({(share or 0) * 100:.1f}%)\n"
        )
    return "".join(lines)


if __name__ == "__main__":  # pragma: no cover - python -m modelrouter.bench.tail
    port = procs.free_port()
    with ExitStack() as outer:
        outer.enter_context(procs.child(["mock-provider", "--port", str(port)], port))
        found = run_tail(f"http://127.0.0.1:{port}")
    print(tail_lines(found))
    print(msgspec.json.format(msgspec.json.encode(found)).decode())
