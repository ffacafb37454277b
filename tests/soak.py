"""`make soak`: mixed traffic with random faults and client disconnects against one gateway
process, then a check that it holds what it held before.

Five providers on the mock provider, each with its own fault: groq answers, openrouter stalls
mid-stream, openai answers 503 with Retry-After, anthropic resets the connection mid-stream,
ollama is slow to its first byte. Clients pick a route (/chat, /stream, /v1 streaming), a
provider (falling over or not), and about one in seven goes away at a random moment.

After a warm-up that takes every path once, the gateway's level is measured; after the traffic
it must come back to it:
- exactly: client connections, requests and streams in flight, attempts in flight, upstream
  sockets outside the pools, asyncio tasks; and MAX_CONCURRENT_STREAMS streams at once must
  all be admitted (no slot leaked);
- RSS within RSS_TOLERANCE_MB of the level after the warm-up. Python keeps freed memory in its
  arenas and the heap fragments, so RSS does not return to the byte; a leak of even 0.5 KB per
  request would pass that bound within the first 20,000 requests of a minute's soak (an open
  stream costs about 30 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from modelrouter.observability import configure_logging
from tests.faults.support import (
    AUTH,
    USER,
    GatewayProcess,
    Leaks,
    MockProcess,
    fault_env,
)

RSS_TOLERANCE_MB = 8.0
PROVIDERS = ("groq", "openrouter", "openai", "anthropic", "ollama")
ROUTES = ("/chat", "/stream", "/v1/chat/completions")
STREAM_SLOTS = 50


def soak_env(mock: MockProcess) -> dict[str, str]:
    faults = {
        "groq": "tokens=20,token_delay=0.002",
        "openrouter": "stall_after=3",
        "openai": "status=503,retry_after=1",
        "anthropic": "reset_after=2",
        "ollama": "first_delay=1",
    }
    env = fault_env(
        mock,
        PROVIDER_ORDER=",".join(PROVIDERS),
        FIRST_CHUNK_TIMEOUT="0.3",
        PROVIDER_TIMEOUT="0.5",
        MAX_OPERATION_TIMEOUT="5",
        BACKOFF_BASE_SECONDS="0.2",
        BACKOFF_MAX_SECONDS="1",
        MAX_CONCURRENT_STREAMS=str(STREAM_SLOTS),
        LOG_LEVEL="WARNING",
    )
    for name, spec in faults.items():
        prefix = name.upper()
        env[f"{prefix}_RATE_LIMIT"] = "0"
        env[f"{prefix}_API_KEY"] = env.get(f"{prefix}_API_KEY", f"soak-key-{name}-0123456789")
        # Ollama's and Anthropic's base URLs have no /v1 (their adapters add their paths).
        native = name in ("ollama", "anthropic")
        env[f"{prefix}_BASE_URL"] = f"{mock.url}/x/{spec}" if native else mock.base(spec)
    return env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def one_request(
    session: aiohttp.ClientSession, url: str, rng: random.Random, statuses: Counter[str]
) -> None:
    route = rng.choice(ROUTES)
    body: dict[str, Any] = dict(USER)
    body["provider"] = rng.choice(PROVIDERS)
    body["fallback"] = rng.random() < 0.9
    if route.startswith("/v1"):
        body |= {"model": "auto", "stream": True}
    leave_after = rng.uniform(0, 0.3) if rng.random() < 0.15 else None

    async def call() -> None:
        async with session.post(f"{url}{route}", json=body, headers=AUTH) as response:
            await response.read()
            statuses[f"{route} {response.status}"] += 1

    try:
        if leave_after is None:
            await call()
        else:
            await asyncio.wait_for(call(), leave_after)
    except TimeoutError:
        statuses[f"{route} left"] += 1
    except aiohttp.ClientError as exc:
        statuses[f"{route} {type(exc).__name__}"] += 1


async def traffic(url: str, seconds: float, clients: int, seed: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        async with aiohttp.ClientSession() as session:  # keep-alive, as real clients
            while time.monotonic() < end:
                await one_request(session, url, rng, statuses)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return statuses


async def level(gateway: GatewayProcess, mock: MockProcess, baseline: float) -> Leaks:
    page = await gateway.scrape()
    return Leaks(page, await gateway.health(), gateway.sockets_to(mock.port), baseline)


async def settle(gateway: GatewayProcess, mock: MockProcess, baseline: float) -> Leaks:
    """Wait (up to 15 s: the longest timer is KEEPALIVE's and the mock's stall) for the
    gateway's level to come back; the last measure either way."""
    end = time.monotonic() + 15
    while True:
        leaks = await level(gateway, mock, baseline)
        if not leaks.leaked or time.monotonic() > end:
            return leaks
        await asyncio.sleep(0.25)


async def all_slots_free(url: str) -> int:
    """Open MAX_CONCURRENT_STREAMS streams at once: how many were refused (429)."""
    async with aiohttp.ClientSession() as session:
        body = dict(USER) | {"provider": "groq", "fallback": False}

        async def one() -> int:
            async with session.post(f"{url}/stream", json=body, headers=AUTH) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(STREAM_SLOTS)))
    return sum(1 for status in statuses if status == 429)


async def soak(seconds: float, clients: int, seed: int) -> int:
    mock = MockProcess().started()
    gateway = GatewayProcess(soak_env(mock))
    try:
        await gateway.up()
        print(f"soak: gateway pid {gateway.pid}, {clients} clients, {seconds:g} s, seed {seed}")
        warm = await traffic(gateway.url, min(5.0, seconds / 4), clients, seed + 1)
        await settle(gateway, mock, gateway.baseline_tasks)
        # The level after the warm-up, tasks included (attempts run in their requests' tasks:
        # nothing per provider may stay behind).
        baseline_tasks = (await gateway.scrape()).value("modelrouter_event_loop_tasks") or 0
        before = rss_mb(gateway.pid)
        started = time.monotonic()
        statuses = await traffic(gateway.url, seconds, clients, seed)
        took = time.monotonic() - started
        peak = rss_mb(gateway.pid)
        idle = baseline_tasks
        leaks = await settle(gateway, mock, idle)
        refused = await all_slots_free(gateway.url)
        leaks = await settle(gateway, mock, idle)
        after = rss_mb(gateway.pid)
        errors = [
            line for line in gateway.log_lines() if line.get("level") in ("ERROR", "CRITICAL")
        ]
    finally:
        gateway.stop()
        mock.stop()
    total = sum(statuses.values())
    print(f"warm-up: {sum(warm.values())} requests; soak: {total} in {took:.0f} s")
    for key, count in sorted(statuses.items()):
        print(f"  {key:38} {count}")
    print(f"level after: {leaks.values}")
    print(f"streams refused when all {STREAM_SLOTS} slots should be free: {refused}")
    print(
        f"RSS: {before:.1f} MB after the warm-up, {peak:.1f} MB at the end of the traffic, "
        f"{after:.1f} MB settled ({after - before:+.1f} MB; tolerance {RSS_TOLERANCE_MB:g} MB)"
    )
    failed = []
    if leaks.leaked:
        failed.append(f"not back to its level: {leaks.leaked}")
    if refused:
        failed.append(f"{refused} stream slots still taken")
    if after - before > RSS_TOLERANCE_MB:
        failed.append(f"RSS grew {after - before:.1f} MB")
    if any(key.endswith(" 500") for key in statuses):
        failed.append("a 500 was answered")
    if errors:
        failed.append(f"{len(errors)} error lines, first: {errors[0]}")
    if total < 10 * seconds:
        failed.append(f"only {total} requests: the soak did not run")
    for problem in failed:
        print(f"soak FAILED: {problem}")
    if not failed:
        print("soak passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING", fmt="json", cache=False)  # the tests' helpers set DEBUG
    return asyncio.run(soak(args.seconds, args.clients, args.seed))


if __name__ == "__main__":
    sys.exit(main())
