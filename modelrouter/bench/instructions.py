"""`make bench-instructions`: instructions per request, this tree against another revision.

Wall-clock figures on a shared machine move by 10-20% between runs; the number of instructions
the gateway executes to serve a request does not. This runs the gateway under valgrind's
callgrind, sends it `few` and then `many` requests one at a time (the difference removes
start-up, shutdown and first-request warm-up), for this tree and for `--compare REV` (from a
temporary git worktree), and prints instructions per request for each route asked
(`--paths`, `ROUTES`' names: `/chat` and `/stream` by default; a route the other revision
does not serve is shown as such). It complements `make bench`: it sees CPU work (the event
loop's included), not waiting.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack

import msgspec

from modelrouter.bench import procs
from modelrouter.bench.suite import checkout

USER = [{"role": "user", "content": "hello there"}]
BODY = msgspec.json.encode({"messages": USER, "provider": "groq", "fallback": False})
_encode = msgspec.json.encode
# name -> (path, body): the same question to the same mock upstream (groq, OpenAI's format) in
# each route's format, and Anthropic's passed through to an Anthropic deployment (`>anthropic`).
ROUTES: dict[str, tuple[str, bytes]] = {
    "/chat": ("/chat", BODY),
    "/stream": ("/stream", BODY),
    "/v1/chat/completions": (
        "/v1/chat/completions",
        _encode({"model": "groq/mock-model", "messages": USER, "fallback": False}),
    ),
    "/v1/chat/completions+stream": (
        "/v1/chat/completions",
        _encode({"model": "groq/mock-model", "messages": USER, "stream": True}),
    ),
    "/v1/messages": (
        "/v1/messages",
        _encode({"model": "groq/mock-model", "max_tokens": 64, "messages": USER}),
    ),
    "/v1/messages+stream": (
        "/v1/messages",
        _encode({"model": "groq/mock-model", "max_tokens": 64, "messages": USER, "stream": True}),
    ),
    "/v1/messages>anthropic": (
        "/v1/messages",
        _encode({"model": "anthropic/mock-model", "max_tokens": 64, "messages": USER}),
    ),
    "/v1/messages/count_tokens": (
        "/v1/messages/count_tokens",
        _encode({"model": "anthropic/mock-model", "messages": USER}),
    ),
    "/v1/embeddings": (
        "/v1/embeddings",
        _encode({"model": "groq/mock-embed", "input": "hello there"}),
    ),
}
_TOTAL = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


def gateway_env(mock_port: int) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq,anthropic",
        "GROQ_API_KEY": "bench-key",
        "GROQ_BASE_URL": f"http://127.0.0.1:{mock_port}/x/tokens=20/v1",
        "GROQ_RATE_LIMIT": "0",
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{mock_port}/x/tokens=20",
        "ANTHROPIC_RATE_LIMIT": "0",
        "MAX_CONCURRENT_STREAMS": "100000",
        "LOG_LEVEL": "INFO",
        "API_KEY": "",
        "REDIS_URL": "",
    }


class NotServed(RuntimeError):
    """The gateway of a revision does not serve the route (it answered 404)."""


def send(port: int, route: str, count: int) -> None:
    path, body = ROUTES[route]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status == 404:
            raise NotServed(route)
        if response.status != 200:
            raise RuntimeError(f"{route} answered {response.status}")
    connection.close()


def instructions(source: str | None, mock_port: int, route: str, count: int) -> int:
    """Instructions the gateway of `source` (None: this tree) executes from start to exit,
    serving `count` requests to `route` (NotServed if it does not serve it)."""
    port = procs.free_port()
    env = {**os.environ, **gateway_env(mock_port)}
    if source is not None:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory(prefix="modelrouter-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += [sys.executable, "-m", "modelrouter", "serve", "--port", str(port)]
        # Run from `source`: `python -m` puts the working directory first on sys.path, so from
        # this tree's root the other revision's PYTHONPATH would be shadowed by this tree.
        process = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter
            command, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            procs.wait_listening(port, timeout=300)
            send(port, route, count)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        with open(out, "rb") as file:
            found = _TOTAL.search(file.read())
    if found is None:
        raise RuntimeError("callgrind wrote no summary")
    return int(found.group(1))


def per_request(
    source: str | None, mock_port: int, route: str, few: int, many: int
) -> float | None:
    """Instructions per request (None: the revision does not serve the route)."""
    try:
        first = instructions(source, mock_port, route, few)
    except NotServed:
        return None
    return (instructions(source, mock_port, route, many) - first) / (many - few)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.instructions")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--few", type=int, default=300, help="requests of the first run")
    parser.add_argument("--many", type=int, default=1300, help="requests of the second run")
    parser.add_argument(
        "--paths", default="/chat,/stream", help=f"comma-separated, of: {', '.join(ROUTES)}"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.stderr.write("valgrind is not installed (apt-get install valgrind)\n")
        return 2
    if not 0 <= args.few < args.many <= 100_000:
        sys.stderr.write("expected 0 <= --few < --many <= 100000\n")
        return 2
    routes = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        sys.stderr.write(f"unknown routes: {', '.join(unknown)} (known: {', '.join(ROUTES)})\n")
        return 2
    mock_port = procs.free_port()
    with ExitStack() as stack:
        stack.enter_context(procs.child(["mock-provider", "--port", str(mock_port)], mock_port))
        sources: list[tuple[str, str | None]] = [("this tree", None)]
        if args.compare:
            sources.append((args.compare, stack.enter_context(checkout(args.compare))))
        for route in routes:
            counts = [
                (label, per_request(src, mock_port, route, args.few, args.many))
                for label, src in sources
            ]
            mine = counts[0][1]
            for label, count in counts:
                sys.stdout.write(f"{route:<28} {label:<12} {_figure(count, mine, label)}\n")
                sys.stdout.flush()
    return 0


def _figure(count: float | None, mine: float | None, label: str) -> str:
    if count is None:
        return "not served"
    ratio = ""
    if label != "this tree" and mine:
        ratio = f" (x{count / mine:.4f} of this tree)"
    return f"{count:>12,.0f} instructions/request{ratio}"


if __name__ == "__main__":
    raise SystemExit(main())
