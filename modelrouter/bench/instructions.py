"""`make bench-instructions`: instructions per request, this tree against another revision.

Wall-clock figures on a shared machine move by 10-20% between runs; the number of instructions
the gateway executes to serve a request does not. This runs the gateway under valgrind's
callgrind, sends it `few` and then `many` requests one at a time (the difference removes
start-up, shutdown and first-request warm-up), for this tree and for `--compare REV` (from a
temporary git worktree), and prints instructions per request for `/chat` and `/stream`.
It complements `make bench`: it sees CPU work (the event loop's included), not waiting.

`--keys DATABASE_URL` measures this tree with keys instead: a static API_KEY, then a virtual
key with an rpm, a tpm and a budget (`bench.keyed`), both with that database (so both write the
history), and prints the virtual key's figure against the static key's.

`--tracing RATIO` runs the gateways with traces on, sampled at RATIO
(`parentbased_traceidratio`; the bench's requests carry no `traceparent`), exported to an
OTLP/HTTP sink in this process that answers 200 and keeps nothing: the export's work in the
gateway (its SDK thread included) is counted, the receiver's is not.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import msgspec

from modelrouter.bench import keyed, procs
from modelrouter.bench.suite import checkout

BODY = msgspec.json.encode(
    {
        "messages": [{"role": "user", "content": "hello there"}],
        "provider": "groq",
        "fallback": False,
    }
)
_TOTAL = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


def gateway_env(mock_port: int) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": "bench-key",
        "GROQ_BASE_URL": f"http://127.0.0.1:{mock_port}/x/tokens=20/v1",
        "GROQ_RATE_LIMIT": "0",
        "MAX_CONCURRENT_STREAMS": "100000",
        "LOG_LEVEL": "INFO",
        "API_KEY": "",
        "REDIS_URL": "",
    }


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint on loopback (for OTEL_EXPORTER_OTLP_ENDPOINT) while in the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def tracing_env(endpoint: str, ratio: float) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": repr(ratio),
    }


def send(port: int, path: str, count: int, secret: str | None = None) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    for _ in range(count):
        connection.request("POST", path, BODY, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    connection.close()


class Keys(msgspec.Struct, frozen=True):
    """Which key the requests carry: a static one, or a virtual one made at start."""

    database_url: str
    virtual: bool

    def env(self) -> dict[str, str]:
        return keyed.keyed_env(self.database_url) | {"API_KEY": keyed.STATIC_KEY}

    def secret(self, port: int) -> str:
        return keyed.create_key(port, timeout=300) if self.virtual else keyed.STATIC_KEY


class Count(NamedTuple):
    """Instructions of every thread, and of the main thread alone (the event loop: the
    request path, without the work of other threads such as the trace exporter's)."""

    total: float
    main: float


def instructions(
    source: str | None, mock_port: int, path: str, count: int, keys: Keys | None = None
) -> Count:
    """Instructions the gateway of `source` (None: this tree) executes from start to exit,
    serving `count` requests to `path` (with `keys`: each carrying that key)."""
    port = procs.free_port()
    env = {**os.environ, **gateway_env(mock_port)}
    if keys is not None:
        env |= keys.env()
    if source is not None:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory(prefix="modelrouter-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        # A file per thread (out-01 is the main thread's: the event loop's).
        command = ["valgrind", "--tool=callgrind", "--separate-threads=yes"]
        command.append(f"--callgrind-out-file={out}")
        command += [sys.executable, "-m", "modelrouter", "serve", "--port", str(port)]
        process = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            procs.wait_listening(port, timeout=300)
            send(port, path, count, None if keys is None else keys.secret(port))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        counts = _summaries(tmp)
    return Count(sum(counts.values()), counts.get("callgrind.out-01", 0))


def _summaries(folder: str) -> dict[str, int]:
    """Each thread's instructions, by the name of its callgrind file."""
    counts: dict[str, int] = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as file:
            found = _TOTAL.search(file.read())
        if found is not None:
            counts[name] = int(found.group(1))
    if not counts:
        raise RuntimeError("callgrind wrote no summary")
    return counts


def per_request(  # noqa: PLR0917 - the run's figures, in the order they are read
    source: str | None, mock_port: int, path: str, few: int, many: int, keys: Keys | None = None
) -> float:
    return per_request_by_thread(source, mock_port, path, few, many, keys).total


def per_request_by_thread(  # noqa: PLR0917 - as per_request
    source: str | None, mock_port: int, path: str, few: int, many: int, keys: Keys | None = None
) -> Count:
    first = instructions(source, mock_port, path, few, keys)
    last = instructions(source, mock_port, path, many, keys)
    requests = many - few
    return Count((last.total - first.total) / requests, (last.main - first.main) / requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.instructions")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--few", type=int, default=300, help="requests of the first run")
    parser.add_argument("--many", type=int, default=1300, help="requests of the second run")
    parser.add_argument("--paths", default="/chat,/stream", help="comma-separated routes")
    parser.add_argument(
        "--keys",
        metavar="DATABASE_URL",
        help="measure a virtual key (rpm, tpm, budget) against a static key instead",
    )
    parser.add_argument(
        "--tracing",
        type=float,
        metavar="RATIO",
        help="traces on, sampled at RATIO (0 to 1), exported to a sink in this process",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.stderr.write("valgrind is not installed (apt-get install valgrind)\n")
        return 2
    if not 0 <= args.few < args.many <= 100_000:
        sys.stderr.write("expected 0 <= --few < --many <= 100000\n")
        return 2
    if args.tracing is not None and not 0.0 <= args.tracing <= 1.0:
        sys.stderr.write("expected --tracing between 0 and 1\n")
        return 2
    mock_port = procs.free_port()
    with ExitStack() as stack:
        if args.tracing is not None:  # every gateway started from here inherits it
            os.environ.update(tracing_env(stack.enter_context(otlp_sink()), args.tracing))
        stack.enter_context(procs.child(["mock-provider", "--port", str(mock_port)], mock_port))
        if args.keys:
            _keys(args, mock_port)
            return 0
        sources: list[tuple[str, str | None]] = [("this tree", None)]
        if args.compare:
            sources.append((args.compare, stack.enter_context(checkout(args.compare))))
        for path in (p.strip() for p in args.paths.split(",") if p.strip()):
            counts = [
                (label, per_request_by_thread(src, mock_port, path, args.few, args.many))
                for label, src in sources
            ]
            mine = counts[0][1]
            for label, count in counts:
                ratio = ""
                if label != "this tree":
                    ratio = f" (x{count.total / mine.total:.4f} of this tree)"
                sys.stdout.write(
                    f"{path:<8} {label:<12} {count.total:>12,.0f} instructions/request{ratio}"
                    f"; main thread {count.main:,.0f}\n"
                )
    return 0


def _keys(args: argparse.Namespace, mock_port: int) -> None:
    """This tree: a virtual key's instructions per request against a static key's."""
    for path in (p.strip() for p in args.paths.split(",") if p.strip()):
        static = per_request(
            None, mock_port, path, args.few, args.many, Keys(args.keys, virtual=False)
        )
        virtual = per_request(
            None, mock_port, path, args.few, args.many, Keys(args.keys, virtual=True)
        )
        sys.stdout.write(
            f"{path:<8} static key   {static:>12,.0f} instructions/request\n"
            f"{path:<8} virtual key  {virtual:>12,.0f} instructions/request"
            f" (x{virtual / static:.4f} of the static key's)\n"
        )


if __name__ == "__main__":
    raise SystemExit(main())
