"""`modelrouter bench`: load one deployment and print req/s, latency percentiles and errors."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from modelrouter.bench.loadgen import chat_body, run_load

MAX_DURATION = 600.0
MAX_REQUESTS = 10_000_000
DEFAULT_PATHS = {("seed", False): "/chat", ("seed", True): "/stream"}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="gateway base URL")
    parser.add_argument("--path", help="route (default: /chat, /stream or /v1/chat/completions)")
    parser.add_argument("--format", choices=("seed", "openai"), default="seed")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--model", help="model (or provider/model) to ask for")
    parser.add_argument("--concurrency", "-c", type=int, default=16)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds (max 600)")
    parser.add_argument("--requests", "-n", type=int, default=100_000, help="at most this many")
    parser.add_argument("--api-key", help="sent as Authorization: Bearer")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep:
            raise SystemExit(f"bench: --header {raw!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    return headers


def run_bench(args: argparse.Namespace) -> int:
    if not 0 < args.duration <= MAX_DURATION or not 0 < args.requests <= MAX_REQUESTS:
        print(
            f"bench: duration must be in (0, {MAX_DURATION:g}] and requests in (0, {MAX_REQUESTS}]",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.concurrency <= 10_000:
        print("bench: concurrency must be between 1 and 10000", file=sys.stderr)
        return 2
    path = args.path or DEFAULT_PATHS.get((args.format, args.stream), "/v1/chat/completions")
    body = chat_body(args.format, stream=args.stream, model=args.model)
    result = asyncio.run(
        run_load(
            args.url.rstrip("/") + path,
            body,
            concurrency=args.concurrency,
            duration=args.duration,
            requests=args.requests,
            stream=args.stream,
            headers=_headers(args),
        )
    )
    summary = result.summary()
    if args.json:
        sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
    else:
        sys.stdout.write(format_table(path, args.concurrency, summary))
    return 0 if result.ok else 1


def format_table(path: str, concurrency: int, summary: dict[str, object]) -> str:
    lines = [
        f"target       {path}  ({concurrency} clients)",
        f"requests     {summary['requests']} sent, {summary['ok']} ok in {summary['seconds']} s",
        f"throughput   {summary['requests_per_second']} req/s",
    ]
    for key, label in (("latency_ms", "latency"), ("first_byte_ms", "first byte")):
        values = summary.get(key)
        if isinstance(values, dict) and values:
            cells = "  ".join(f"{name} {value:.2f}" for name, value in values.items())
            lines.append(f"{label:<12} {cells} (ms)")
    errors = summary["errors"]
    lines.append(f"errors       {errors if errors else 'none'}")
    return "\n".join(lines) + "\n"
