"""`modelrouter serve | check-config | mock-provider | bench | keys` (also
`python -m modelrouter ...`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from modelrouter.config import ConfigError, Settings, describe, secrets_of
from modelrouter.internals import IncompatibleRelease
from modelrouter.observability import configure_logging
from modelrouter.routing import load_settings


def _env(overrides: dict[str, str]) -> dict[str, str]:
    import os  # noqa: PLC0415

    return dict(os.environ) | {k: v for k, v in overrides.items() if v}


def _load(overrides: dict[str, str]) -> Settings | None:
    env = _env(overrides)
    try:
        return load_settings(env)
    except ConfigError as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return None


def _cmd_serve(args: argparse.Namespace) -> int:
    from modelrouter.web.reload import early_signals  # noqa: PLC0415

    early_signals(worker=args.worker)  # until it serves, a reload signal waits for it
    overrides = {"HOST": args.host or "", "PORT": str(args.port or "")}
    settings = _load(overrides)
    if settings is None:
        return 2
    if args.workers > 1 and settings.redis_url is None:
        print(
            "modelrouter: --workers > 1 needs REDIS_URL: without shared state each worker "
            "would apply the limits on its own",
            file=sys.stderr,
        )
        return 2
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=secrets_of(settings),
        delay=settings.log_flush_seconds or None,
    )
    from modelrouter.web.server import StartError, run  # noqa: PLC0415 - keeps check-config light
    from modelrouter.workers import DRAIN_SIGNAL, HURRY_SIGNAL, run_workers  # noqa: PLC0415

    try:
        _check_internals()
        if args.workers > 1:
            return run_workers(settings, args.workers)
        told = (DRAIN_SIGNAL, HURRY_SIGNAL) if args.worker else None
        run(settings, reuse_port=args.worker, told=told, env=_env(overrides))
    except (StartError, IncompatibleRelease) as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_internals() -> None:
    """The dependencies' private internals that the gateway relies on are there (internals.py)."""
    from modelrouter.state import wire  # noqa: PLC0415
    from modelrouter.web import connections  # noqa: PLC0415

    connections.check_internals()
    wire.check_internals()


def _cmd_check_config(_: argparse.Namespace) -> int:
    settings = _load({})
    if settings is None:
        return 2
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(describe(settings))).decode() + "\n")
    return 0


def _cmd_mock(args: argparse.Namespace) -> int:
    from modelrouter.mock import faults_from_args, run_mock  # noqa: PLC0415

    run_mock(args.host, args.port, faults_from_args(args))
    return 0


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: expected 1 to 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    from modelrouter.bench import add_bench_arguments, run_bench  # noqa: PLC0415
    from modelrouter.mock import add_mock_arguments  # noqa: PLC0415
    from modelrouter.tenants.command import add_keys_arguments, run_keys  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="modelrouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the gateway (configuration from the environment)"
    )
    serve.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); more than 1 needs REDIS_URL",
    )
    # One of the processes of `serve --workers N` (modelrouter.workers): SO_REUSEPORT, and told
    # by its parent when to drain.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)
    check = commands.add_parser("check-config", help="validate and print the configuration")
    check.set_defaults(func=_cmd_check_config)
    mock = commands.add_parser(
        "mock-provider", help="run the mock LLM provider (tests, load tests)"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9000)
    add_mock_arguments(mock)
    mock.set_defaults(func=_cmd_mock)
    bench = commands.add_parser("bench", help="load a deployment; report req/s and latency")
    add_bench_arguments(bench)
    bench.set_defaults(func=run_bench)
    keys = commands.add_parser("keys", help="create, list, show, revoke, rotate virtual keys")
    add_keys_arguments(keys)
    keys.set_defaults(func=run_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
