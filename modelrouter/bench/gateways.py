"""The gateways `make bench` runs side by side: this tree's, and each variant asked for
(another revision, Redis on loopback and behind the delay proxy, history in PostgreSQL, a
virtual key with an rpm, a tpm and a budget)."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec

from modelrouter.bench import keyed, procs, redis_rows
from modelrouter.bench.redis_rows import redis_url

# Mock path prefixes (fault specs): the scenarios' upstreams, and the provider wired to each.
PLAIN, LONG, PACED = "", "/x/tokens=20", "/x/tokens=20,token_delay=0.01"
STALLED = "/x/tokens=2,stall_after=1"  # one chunk, then the upstream holds the stream open


def gateway_env(
    mock: str, *, workers: int = 1, rate_limit: int = redis_rows.RATE_LIMIT
) -> dict[str, str]:
    env = {
        "PROVIDER_ORDER": "groq,openrouter,openai,ollama",
        "OLLAMA_BASE_URL": f"{mock}{STALLED}",
        "OLLAMA_MAX_CONCURRENCY": "20000",
        "OLLAMA_RATE_LIMIT": "0",
        "PROVIDER_TIMEOUT": "600",
        "GROQ_BASE_URL": f"{mock}{PLAIN}/v1",
        "OPENROUTER_BASE_URL": f"{mock}{LONG}/v1",
        "OPENAI_BASE_URL": f"{mock}{PACED}/v1",
        "MAX_CONCURRENT_STREAMS": str(redis_rows.STREAM_CAP),
        "LOG_LEVEL": "INFO",  # the default: the per-request line is part of the cost
        "API_KEY": "",
        "REDIS_URL": "",
    }
    if workers > 1:  # several processes share limits through Redis (a bench-only key prefix)
        env |= redis_rows.redis_env(redis_url(), "workers")
    for name in ("GROQ", "OPENROUTER", "OPENAI"):
        env |= {f"{name}_API_KEY": "bench-key", f"{name}_RATE_LIMIT": str(rate_limit)}
        env[f"{name}_MAX_CONCURRENCY"] = "4096"
    return env


class Gateway(msgspec.Struct):
    """One gateway under test: its label in the table, where it listens, its pid."""

    label: str
    url: str
    pid: int
    proxy_pid: int | None = None  # the delay proxy between it and Redis, sampled with it
    versus: str | None = None  # another gateway's label: also compared round by round with it
    on_redis: bool = False  # meant to run on Redis shared state all along
    headers: dict[str, str] = {}  # what each request carries (a virtual key)


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


class Variant(msgspec.Struct, frozen=True):
    """A gateway to start beside this tree's: its label, its environment's differences."""

    label: str
    env: dict[str, str]
    proxy_pid: int | None = None
    versus: str | None = None
    on_redis: bool = False
    keyed: bool = False  # requests carry a virtual key made on it at start


def redis_variants(
    stack: ExitStack, args: argparse.Namespace, settings: dict[str, Any]
) -> list[Variant]:
    """`redis` on REDIS_URL and, with a delay, `redis +Nms` on the same Redis behind the delay
    proxy (compared with `redis` too). Each path's round trip, timed before any load, goes
    into `settings`."""
    url = redis_url()
    variants = [Variant("redis", redis_rows.redis_env(url, "redis"), on_redis=True)]
    trips = {"direct": redis_rows.round_trip_ms(url)}
    delay = args.redis_delay_ms
    if delay > 0:
        host, target_port = redis_rows.proxy_target(url)
        port = procs.free_port()
        command = ["--port", str(port), "--target", f"{host}:{target_port}", "--delay-ms"]
        pid = stack.enter_context(
            procs.child([*command, str(delay)], port, module="modelrouter.bench.delay")
        )
        proxied = redis_rows.through_proxy(url, port)
        label = f"redis +{delay:g}ms"
        env = redis_rows.redis_env(proxied, "delayed")
        variants.append(Variant(label, env, pid, versus="redis", on_redis=True))
        trips["through the delay proxy"] = redis_rows.round_trip_ms(proxied)
        settings["redis_delay_ms"] = delay
    settings["redis_round_trip_ms"] = {path: round(ms, 4) for path, ms in trips.items()}
    return variants


def start_gateways(
    stack: ExitStack, mock: str, args: argparse.Namespace, settings: dict[str, Any]
) -> list[Gateway]:
    """This tree's gateway, then each variant asked for (`--compare REV`, `--redis` and its
    delayed twin, `--history DATABASE_URL`)."""
    wanted = [Variant("modelrouter", {})]
    if args.compare:
        source = stack.enter_context(checkout(args.compare))
        wanted.append(Variant(args.compare, {"PYTHONPATH": source}))
    if args.redis:
        wanted.extend(redis_variants(stack, args, settings))
    if args.history:
        # With a static key: a gateway with DATABASE_URL serves keyless requests only while
        # its database holds no virtual key, and the `virtual key` row makes one.
        history = {"DATABASE_URL": args.history, "API_KEY": keyed.STATIC_KEY}
        wanted.append(Variant("history", history))
    if args.keys:  # the history is on too: read it against the `history` row
        wanted.append(Variant("virtual key", keyed.keyed_env(args.keys), keyed=True))
    gateways = []
    for variant in wanted:
        port = procs.free_port()
        env = gateway_env(mock, workers=args.workers, rate_limit=args.rate_limit) | variant.env
        command = ["serve", "--port", str(port), "--workers", str(args.workers)]
        pid = stack.enter_context(procs.child(command, port, env))
        url = f"http://127.0.0.1:{port}"
        headers = {}
        if variant.keyed:
            headers["Authorization"] = f"Bearer {keyed.create_key(port)}"
        elif variant.env.get("API_KEY"):
            headers["Authorization"] = f"Bearer {variant.env['API_KEY']}"
        gateways.append(
            Gateway(
                variant.label,
                url,
                pid,
                proxy_pid=variant.proxy_pid,
                versus=variant.versus,
                on_redis=variant.on_redis,
                headers=headers,
            )
        )
    return gateways
