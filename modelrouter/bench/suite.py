"""`make bench`: modelrouter beside a direct-to-upstream baseline, interleaved in one run.

Starts the mock provider and a gateway in front of it, then for each scenario alternates
direct and gateway runs (so drift hits both), sampling the gateway's RSS and CPU. Prints one
comparison table and writes the raw figures as JSON. When a Redis answers (REDIS_URL, else
127.0.0.1:6379 db 15), a second gateway with Redis shared state runs in the same rounds: the
`redis` rows (`--no-redis` leaves them out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec
import redis

from modelrouter.bench import procs, wrk
from modelrouter.bench.loadgen import Measurement, chat_body, run_load
from modelrouter.bench.open_streams import hold_streams
from modelrouter.config import mask_url

OPEN_STREAMS_GOAL = 10_000


def max_open_streams() -> int:
    """A held stream takes two descriptors in the gateway (client and upstream): what the
    hard RLIMIT_NOFILE allows, less headroom for the rest (the earlier scenarios leave up to
    64 idle upstream connections in each provider's pool), up to the goal."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return OPEN_STREAMS_GOAL
    return max(0, min(OPEN_STREAMS_GOAL, (hard - 256) // 2))


PLAIN, LONG, PACED = "", "/x/tokens=20", "/x/tokens=20,token_delay=0.01"
STALLED = "/x/tokens=2,stall_after=1"  # one chunk, then the upstream holds the stream open


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


def gateway_env(mock: str, *, workers: int = 1) -> dict[str, str]:
    env = {
        "PROVIDER_ORDER": "groq,openrouter,openai,ollama",
        "OLLAMA_BASE_URL": f"{mock}{STALLED}",
        "OLLAMA_MAX_CONCURRENCY": "20000",
        "OLLAMA_RATE_LIMIT": "0",
        "PROVIDER_TIMEOUT": "600",
        "GROQ_BASE_URL": f"{mock}{PLAIN}/v1",
        "OPENROUTER_BASE_URL": f"{mock}{LONG}/v1",
        "OPENAI_BASE_URL": f"{mock}{PACED}/v1",
        "MAX_CONCURRENT_STREAMS": "100000",
        "LOG_LEVEL": "INFO",  # the default: the per-request line is part of the cost
        "API_KEY": "",
        "REDIS_URL": "",
    }
    if workers > 1:  # several processes share limits through Redis (a bench-only key prefix)
        env["REDIS_URL"] = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
        env["REDIS_KEY_PREFIX"] = f"mrbench{os.getpid()}"
    for name in ("GROQ", "OPENROUTER", "OPENAI"):
        env |= {f"{name}_API_KEY": "bench-key", f"{name}_RATE_LIMIT": "0"}
        env[f"{name}_MAX_CONCURRENCY"] = "4096"
    return env


def measure(url: str, body: bytes, scenario: Scenario, seconds: float) -> Measurement:
    if scenario.tool == "wrk" and wrk.available():
        return wrk.run_wrk(url, body, concurrency=scenario.concurrency, duration=seconds)
    result = asyncio.run(
        run_load(
            url, body, concurrency=scenario.concurrency, duration=seconds, stream=scenario.stream
        )
    )
    return result.measurement()


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (each wrk run, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Gateway(msgspec.Struct):
    """One gateway under test: its label in the table, where it listens, its pid."""

    label: str
    url: str
    pid: int


class _Totals:
    """What one gateway spent over a scenario's rounds."""

    def __init__(self) -> None:
        self.runs: list[Measurement] = []
        self.peak_rss = 0
        self.cpu = self.mock_cpu = self.client_cpu = 0.0
        self.served = 0

    def figures(self, tool: str) -> dict[str, Any]:
        per_request = 1000 / max(self.served, 1)
        return {
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
            with procs.Sampler(gateway.pid) as sample, procs.Sampler(mock_pid) as upstream:
                total.runs.append(measure(f"{gateway.url}{path}", gateway_body, scenario, seconds))
            total.client_cpu += _children_cpu() - before
            total.peak_rss = max(total.peak_rss, sample.peak_rss)
            total.cpu += sample.cpu
            total.mock_cpu += upstream.cpu
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
            g.label: totals[g.label].figures(tool) | paired(base.runs, totals[g.label].runs)
            for g in others
        },
    }


def paired(this: list[Measurement], other: list[Measurement]) -> dict[str, Any]:
    """Round by round (the runs of one round are back to back): the median of the throughput
    ratios and of the p50 differences, which drift between rounds does not bias."""
    pairs = list(zip(this, other, strict=True))
    ratios = sorted(o.rate / (m.rate or 1) for m, o in pairs)
    added = sorted(o.p50 - m.p50 for m, o in pairs)
    return {
        "per_round": {
            "rounds": len(pairs),
            "rate_ratio_median": round(ratios[len(ratios) // 2], 4),
            "rate_ratio_range": [round(ratios[0], 4), round(ratios[-1], 4)],
            "p50_added_ms_median": round(added[len(added) // 2], 4),
            "p50_added_ms_range": [round(added[0], 4), round(added[-1], 4)],
        }
    }


def capacity(results: list[dict[str, Any]], cores: int) -> str:
    """What the whole machine can carry through the gateway, from the CPU each part used per
    request under load: the ceiling that more workers cannot pass on this machine."""
    lines = []
    for r in results:
        client = r.get("client_cpu_ms_per_request")
        if client is None or r["concurrency"] < 16:
            continue
        gateway, mock = r["gateway_cpu_ms_per_request"], r["mock_cpu_ms_per_request"]
        total = gateway + mock + client
        lines.append(
            f"{r['scenario']}: CPU per request: gateway {gateway:.3f} + mock {mock:.3f} + wrk "
            f"{client:.3f} ms; {cores} cores carry at most {cores / total * 1000:.0f}/s through "
            "the gateway, however many workers"
        )
    return "".join(line + "\n" for line in lines)


def _median(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput (one run's figures stay consistent together)."""
    return sorted(runs, key=lambda m: m.rate)[len(runs) // 2]


def table(results: list[dict[str, Any]], idle_rss: float) -> str:
    head = (
        f"{'scenario':<34}{'direct req/s':>13}{'router req/s':>13}{'ratio':>7}"
        f"{'direct p50':>11}{'router p50':>11}{'added p50':>10}{'router p99':>11}"
        f"{'CPU ms/req':>11}{'RSS MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        d = r["direct"]
        lines.append(_row(r["scenario"], d, r))
        for label, other in r.get("others", {}).items():
            lines.append(_row(f"  {label}", d, other))
            m, o = r["modelrouter"], other["modelrouter"]
            cpu = other["gateway_cpu_ms_per_request"] / (r["gateway_cpu_ms_per_request"] or 1)
            line = (
                f"{'':<4}{label} against this tree: req/s x{o['rate'] / (m['rate'] or 1):.3f}, "
                f"p50 {o['p50'] - m['p50']:+.3f} ms, CPU/req x{cpu:.3f}"
            )
            rounds = other.get("per_round")
            if rounds:
                line += (
                    f"; per round (median of {rounds['rounds']}): "
                    f"req/s x{rounds['rate_ratio_median']:.3f}, "
                    f"p50 {rounds['p50_added_ms_median']:+.3f} ms"
                )
            lines.append(line)
        m = r["modelrouter"]
        if m.get("first_byte_p50") is not None and d.get("first_byte_p50") is not None:
            lines.append(
                f"{'':<4}first byte p50: direct {d['first_byte_p50']:.2f} ms, router "
                f"{m['first_byte_p50']:.2f} ms; mean stream time ratio "
                f"{(m['mean'] or 0) / (d['mean'] or 1):.3f}"
            )
        errors = {k: v for k, v in {**d["errors"], **m["errors"]}.items() if v}
        if errors:
            lines.append(f"{'':<4}errors: direct {d['errors']}, router {m['errors']}")
    lines.append(f"gateway RSS idle: {idle_rss:.1f} MB; latencies in ms; ratio = router/direct")
    return "\n".join(lines) + "\n"


def _row(name: str, d: dict[str, Any], figures: dict[str, Any]) -> str:
    m = figures["modelrouter"]
    ratio = m["rate"] / d["rate"] if d["rate"] else 0.0
    return (
        f"{name:<34}{d['rate']:>13.0f}{m['rate']:>13.0f}{ratio:>7.2f}"
        f"{d['p50']:>11.3f}{m['p50']:>11.3f}{m['p50'] - d['p50']:>+10.3f}{m['p99']:>11.3f}"
        f"{figures['gateway_cpu_ms_per_request']:>11.3f}{figures['gateway_peak_rss_mb']:>8.1f}"
    )


@contextmanager
def checkout(revision: str) -> Iterator[str]:
    """A detached worktree of `revision` (removed afterwards), to run that version's code."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = tempfile.mkdtemp(prefix="modelrouter-bench-")
    git = ["git", "-C", top, "worktree"]
    subprocess.run([*git, "add", "--detach", path, revision], check=True, capture_output=True)  # noqa: S603
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", path], check=False, capture_output=True)  # noqa: S603


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_env() -> dict[str, str]:
    """Shared state in Redis, under a key prefix of this run's own."""
    return {"REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": f"mrbench{os.getpid()}"}


def start_gateways(stack: ExitStack, mock: str, args: argparse.Namespace) -> list[Gateway]:
    """This tree's gateway, then each variant asked for (`--compare REV`, `--redis`,
    `--history DATABASE_URL`)."""
    wanted: list[tuple[str, dict[str, str]]] = [("modelrouter", {})]
    if args.compare:
        source = stack.enter_context(checkout(args.compare))
        wanted.append((args.compare, {"PYTHONPATH": source}))
    if args.redis:
        wanted.append(("redis", redis_env()))
    if args.history:
        wanted.append(("history", {"DATABASE_URL": args.history}))
    gateways = []
    for label, extra in wanted:
        port = procs.free_port()
        env = gateway_env(mock, workers=args.workers) | extra
        command = ["serve", "--port", str(port), "--workers", str(args.workers)]
        pid = stack.enter_context(procs.child(command, port, env))
        gateways.append(Gateway(label, f"http://127.0.0.1:{port}", pid))
    return gateways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.suite")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per run (max 30; wrk runs take whole seconds)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="direct/router pairs per scenario")
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
        help="also run this tree's gateway with Redis shared state (REDIS_URL, else db 15); "
        "by default when that Redis answers",
    )
    parser.add_argument(
        "--history",
        metavar="DATABASE_URL",
        help="also run this tree's gateway with history written to this PostgreSQL database",
    )
    args = parser.parse_args(argv)
    if args.redis is None:
        args.redis = args.workers == 1 and redis_answers(redis_url())
    elif args.redis and not redis_answers(redis_url()):
        parser.error(f"--redis: no Redis answers at {mask_url(redis_url())}")
    seconds, rounds = min(args.seconds, 30.0), max(1, min(args.rounds, 5))
    mock_port = procs.free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    with ExitStack() as stack:
        mock_pid = stack.enter_context(
            procs.child(["mock-provider", "--port", str(mock_port)], mock_port)
        )
        gateways = start_gateways(stack, mock, args)
        main_gateway = gateways[0]
        idle_rss = procs.rss_bytes(main_gateway.pid) / 2**20
        results = [
            run_scenario(s, mock, gateways, mock_pid, seconds=seconds, rounds=rounds)
            for s in SCENARIOS
        ]
        held = None
        if args.open_streams > 0:
            count = min(args.open_streams, max_open_streams())
            if count < args.open_streams:
                sys.stderr.write(
                    f"note: holding {count} streams, not {args.open_streams}: the hard "
                    "RLIMIT_NOFILE leaves no more descriptors (two per stream)\n"
                )
            held = asyncio.run(hold_streams(main_gateway.url, main_gateway.pid, count, "ollama"))
    report = table(results, idle_rss) + capacity(results, os.cpu_count() or 1)
    if held is not None:
        report += (
            f"open streams: {held['streams_open']}/{held['streams_requested']} held, gateway RSS "
            f"{held['rss_before_mb']} -> {held['rss_open_mb']} MB, "
            f"{held['kb_per_open_stream']} KB per open stream\n"
        )
    sys.stdout.write(report)
    if not wrk.available():
        sys.stdout.write(
            "note: wrk not found; the Python client ran every scenario and may be "
            "the bottleneck at high rates (apt-get install wrk)\n"
        )
    with open(args.json, "wb") as out:
        out.write(
            msgspec.json.format(
                msgspec.json.encode(
                    {"idle_rss_mb": round(idle_rss, 1), "results": results, "open_streams": held}
                )
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
