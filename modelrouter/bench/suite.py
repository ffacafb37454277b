"""`make bench`: modelrouter beside a direct-to-upstream baseline, interleaved in one run.

Starts the mock provider and a gateway in front of it, then for each scenario alternates
direct and gateway runs (so drift hits both), sampling the gateway's RSS and CPU. Prints one
comparison table and writes the raw figures as JSON. The providers have a rate limit and the
streams a cap that no run reaches, so each request pays the rate script and each stream a
lease (`--rate-limit 0` leaves the limit out). When a Redis answers (REDIS_URL, else
127.0.0.1:6379 db 15), gateways with Redis shared state run in the same rounds: `redis`, on
that Redis, and `redis +1ms`, behind a delay proxy (`modelrouter.bench.delay`) that makes each
round trip to it 1 ms longer (`--redis-delay-ms`; `--no-redis` leaves both out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from contextlib import ExitStack
from typing import Any

import msgspec

from modelrouter.bench import procs, redis_rows, status, wrk
from modelrouter.bench.gateways import (
    LONG,
    PACED,
    PLAIN,
    Gateway,
    checkout,
    gateway_env,
    start_gateways,
)
from modelrouter.bench.loadgen import Measurement, chat_body, run_load
from modelrouter.bench.open_streams import hold_streams
from modelrouter.bench.redis_rows import redis_answers, redis_url
from modelrouter.bench.report import capacity, paired, settings_lines, table
from modelrouter.config import mask_url

# Importable from here too (the tests and `make bench-instructions` do).
__all__ = ["capacity", "checkout", "gateway_env", "main", "paired", "redis_answers", "table"]

OPEN_STREAMS_GOAL = 10_000


def max_open_streams() -> int:
    """A held stream takes two descriptors in the gateway (client and upstream): what the
    hard RLIMIT_NOFILE allows, less headroom for the rest (the earlier scenarios leave up to
    64 idle upstream connections in each provider's pool), up to the goal."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return OPEN_STREAMS_GOAL
    return max(0, min(OPEN_STREAMS_GOAL, (hard - 256) // 2))


class Scenario(msgspec.Struct, frozen=True):
    name: str
    concurrency: int
    upstream: str  # mock path prefix (fault spec) the direct run and the provider use
    provider: str  # the gateway provider wired to that prefix
    stream: bool
    tool: str  # "wrk" (C client, throughput) or "python" (first-byte timing)


SCENARIOS = [
    Scenario("chat, 1 client", 1, PLAIN, "groq", False, "wrk"),
    Scenario("chat, 64 clients", 64, PLAIN, "groq", False, "wrk"),
    Scenario("stream 20 tokens, 64 clients", 64, LONG, "openrouter", True, "wrk"),
    Scenario("paced stream 20x10ms, 16 clients", 16, PACED, "openai", True, "python"),
]


def measure(
    url: str,
    body: bytes,
    scenario: Scenario,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> Measurement:
    if scenario.tool == "wrk" and wrk.available():
        return wrk.run_wrk(
            url, body, concurrency=scenario.concurrency, duration=seconds, headers=headers
        )
    result = asyncio.run(
        run_load(
            url,
            body,
            concurrency=scenario.concurrency,
            duration=seconds,
            stream=scenario.stream,
            headers=headers,
        )
    )
    return result.measurement()


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (each wrk run, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Totals:
    """What one gateway spent over a scenario's rounds."""

    def __init__(self) -> None:
        self.runs: list[Measurement] = []
        self.peak_rss = 0
        self.cpu = self.mock_cpu = self.client_cpu = 0.0
        self.proxy_cpu: float | None = None
        self.served = 0

    def figures(self, tool: str) -> dict[str, Any]:
        per_request = 1000 / max(self.served, 1)
        proxy = {}
        if self.proxy_cpu is not None:
            proxy["proxy_cpu_ms_per_request"] = round(self.proxy_cpu * per_request, 4)
        return proxy | {
            "modelrouter": msgspec.to_builtins(_median(self.runs)),
            "gateway_peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "gateway_cpu_ms_per_request": round(self.cpu * per_request, 4),
            "mock_cpu_ms_per_request": round(self.mock_cpu * per_request, 4),
            # The Python client runs in this process: its CPU is not a child's.
            "client_cpu_ms_per_request": (
                round(self.client_cpu * per_request, 4) if tool == "wrk" else None
            ),
        }


def run_scenario(
    scenario: Scenario,
    mock: str,
    gateways: list[Gateway],
    mock_pid: int,
    *,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Each round runs the direct baseline, then every gateway in turn (interleaved, so drift
    hits all of them; the order rotates from round to round). The gateway and the mock are
    sampled while the gateway is loaded."""
    direct_url = f"{mock}{scenario.upstream}/v1/chat/completions"
    direct_body = chat_body("openai", stream=scenario.stream, model="mock-model")
    path = "/stream" if scenario.stream else "/chat"
    gateway_body = chat_body(
        "seed", stream=scenario.stream, provider=scenario.provider, fallback=False
    )
    direct: list[Measurement] = []
    totals = {g.label: _Totals() for g in gateways}
    for index in range(rounds):
        direct.append(measure(direct_url, direct_body, scenario, seconds))
        # Each round starts with another gateway: the one run right after the direct baseline
        # was seen to lose several percent, whichever it was.
        shift = index % len(gateways)
        for gateway in gateways[shift:] + gateways[:shift]:
            total = totals[gateway.label]
            before = _children_cpu()
            pids = (gateway.pid, mock_pid, gateway.proxy_pid)
            samplers = [procs.Sampler(pid) for pid in pids if pid is not None]
            with ExitStack() as sampling:
                for sampler in samplers:
                    sampling.enter_context(sampler)
                url = f"{gateway.url}{path}"
                total.runs.append(measure(url, gateway_body, scenario, seconds, gateway.headers))
            total.client_cpu += _children_cpu() - before
            sample, upstream, *proxy = samplers
            total.peak_rss = max(total.peak_rss, sample.peak_rss)
            total.cpu += sample.cpu
            total.mock_cpu += upstream.cpu
            if proxy:
                total.proxy_cpu = (total.proxy_cpu or 0.0) + proxy[0].cpu
            total.served += total.runs[-1].requests
    tool = "wrk" if scenario.tool == "wrk" and wrk.available() else "python"
    first, *others = gateways
    base = totals[first.label]
    return {
        "scenario": scenario.name,
        "concurrency": scenario.concurrency,
        "tool": tool,
        "direct": msgspec.to_builtins(_median(direct)),
        **base.figures(tool),
        "others": {
            g.label: totals[g.label].figures(tool)
            | paired(base.runs, totals[g.label].runs)
            | _versus(g, totals)
            for g in others
        },
    }


def _versus(gateway: Gateway, totals: dict[str, _Totals]) -> dict[str, Any]:
    """`gateway` round by round against the gateway it is meant to be read with."""
    if gateway.versus is None or gateway.versus not in totals:
        return {}
    rounds = paired(totals[gateway.versus].runs, totals[gateway.label].runs)["per_round"]
    return {"versus": {"label": gateway.versus, **rounds}}


def _median(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput (one run's figures stay consistent together)."""
    return sorted(runs, key=lambda m: m.rate)[len(runs) // 2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.suite")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per run (max 30; wrk runs take whole seconds)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds per scenario (1 to 5)"
    )
    parser.add_argument("--json", default="bench-results.json", help="where to write the figures")
    parser.add_argument(
        "--open-streams",
        type=int,
        default=0,
        help="also hold N streams open (at most 10,000, and what RLIMIT_NOFILE allows)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="gateway processes (>1 uses Redis at REDIS_URL)"
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also run the gateway of git revision REV (A/B, interleaved in the same rounds)",
    )
    parser.add_argument(
        "--redis",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run this tree's gateway with Redis shared state (REDIS_URL, else db 15), "
        "direct and behind the delay proxy; by default when that Redis answers",
    )
    parser.add_argument(
        "--redis-delay-ms",
        type=float,
        default=redis_rows.DEFAULT_DELAY_MS,
        metavar="MS",
        help="with Redis, also a gateway whose every Redis round trip is MS longer "
        "(0 to 100; 0 leaves it out; a redis:// URL on loopback only)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=redis_rows.RATE_LIMIT,
        metavar="RPM",
        help="the providers' rate limit, a minute: high enough that no request is refused, so "
        "each pays the rate script (0: unlimited, no rate script)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="TEXT",
        help="only the scenarios whose name holds TEXT (repeatable; e.g. '64 clients')",
    )
    parser.add_argument(
        "--history",
        metavar="DATABASE_URL",
        help="also run this tree's gateway with history written to this PostgreSQL database",
    )
    parser.add_argument(
        "--keys",
        metavar="DATABASE_URL",
        help="also run this tree's gateway with virtual keys in this PostgreSQL database, each "
        "request carrying a key with an rpm, a tpm and a budget (none of them reached)",
    )
    args = parser.parse_args(argv)
    if not chosen(args.scenario):
        parser.error(f"--scenario: none of {args.scenario} names a scenario")
    if not 0 <= args.redis_delay_ms <= 100 or args.rate_limit < 0:
        parser.error("--redis-delay-ms must be from 0 to 100, --rate-limit at least 0")
    asked = args.redis
    if asked is None:
        args.redis = args.workers == 1 and redis_answers(redis_url())
    elif asked and not redis_answers(redis_url()):
        parser.error(f"--redis: no Redis answers at {mask_url(redis_url())}")
    if args.redis and args.redis_delay_ms > 0:
        try:
            redis_rows.proxy_target(redis_url())
        except ValueError as exc:
            if asked:
                parser.error(f"--redis-delay-ms: {exc} (0 leaves the delayed gateway out)")
            sys.stderr.write(f"note: no delayed Redis gateway: {exc}\n")
            args.redis_delay_ms = 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [
        s for s in SCENARIOS if not args.scenario or any(t in s.name for t in args.scenario)
    ]
    seconds, rounds = min(args.seconds, 30.0), max(1, min(args.rounds, 5))
    settings: dict[str, Any] = {
        "rate_limit": args.rate_limit,
        "stream_cap": redis_rows.STREAM_CAP,
    }
    mock_port = procs.free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    with ExitStack() as stack:
        if args.redis or args.workers > 1:  # once every gateway has stopped
            stack.callback(redis_rows.forget, redis_url())
        mock_pid = stack.enter_context(
            procs.child(["mock-provider", "--port", str(mock_port)], mock_port)
        )
        gateways = start_gateways(stack, mock, args, settings)
        main_gateway = gateways[0]
        idle_rss = procs.rss_bytes(main_gateway.pid) / 2**20
        results = [
            run_scenario(s, mock, gateways, mock_pid, seconds=seconds, rounds=rounds)
            for s in scenarios
        ]
        held = None
        if args.open_streams > 0:
            held = open_streams(main_gateway, args.open_streams)
        found = status.statuses({g.label: g.url for g in gateways})
    redis_labels = {g.label for g in gateways if g.on_redis or args.workers > 1}
    report = settings_lines(settings) + table(results, idle_rss)
    report += capacity(results, os.cpu_count() or 1)
    if held is not None:
        report += (
            f"open streams: {held['streams_open']}/{held['streams_requested']} held, gateway RSS "
            f"{held['rss_before_mb']} -> {held['rss_open_mb']} MB, "
            f"{held['kb_per_open_stream']} KB per open stream\n"
        )
    report += status.warnings(found, redis_labels=redis_labels)
    sys.stdout.write(report)
    if not wrk.available():
        sys.stdout.write(
            "note: wrk not found; the Python client ran every scenario and may be "
            "the bottleneck at high rates (apt-get install wrk)\n"
        )
    figures = {
        "settings": settings,
        "idle_rss_mb": round(idle_rss, 1),
        "results": results,
        "open_streams": held,
        "gateways": found,
    }
    with open(args.json, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(figures)))
    return 0


def chosen(wanted: list[str] | None) -> list[Scenario]:
    """The scenarios whose name holds one of `wanted` (all when None)."""
    return [s for s in SCENARIOS if not wanted or any(text in s.name for text in wanted)]


def open_streams(gateway: Gateway, wanted: int) -> dict[str, Any]:
    count = min(wanted, max_open_streams())
    if count < wanted:
        sys.stderr.write(
            f"note: holding {count} streams, not {wanted}: the hard "
            "RLIMIT_NOFILE leaves no more descriptors (two per stream)\n"
        )
    return asyncio.run(hold_streams(gateway.url, gateway.pid, count, "ollama"))


if __name__ == "__main__":
    raise SystemExit(main())
