"""`make bench-instructions`: instructions per request, this tree against another revision.

Wall-clock figures on a shared machine move by 10-20% between runs; the number of instructions
the gateway executes to serve a request does not. This runs the gateway under valgrind's
callgrind, sends it `few` and then `many` requests one at a time (the difference removes
start-up, shutdown and first-request warm-up), for this tree and for `--compare REV` (from a
temporary git worktree), and prints instructions per request for `/chat` and `/stream`.
It complements `make bench`: it sees CPU work (the event loop's included), not waiting.

`--auth static` sends a key of API_KEY; `--auth virtual` a virtual key with `rpm`, `tpm` and
a budget set, created first in `--database-url` (this tree only: older revisions have no virtual
keys). With `--database-url` the history is on as well, for every run alike.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack

import msgspec

from modelrouter.bench import procs
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


STATIC_KEY = "bench-client-key-0001"


class Auth(msgspec.Struct, frozen=True):
    """What the gateway is started with, and the key each request carries."""

    env: dict[str, str]
    key: str | None = None


NO_AUTH = Auth({})


def auth_of(kind: str, database_url: str | None) -> Auth:
    env = {} if database_url is None else {"DATABASE_URL": database_url}
    if kind == "static":
        return Auth({**env, "API_KEY": STATIC_KEY}, STATIC_KEY)
    if kind == "virtual":
        if database_url is None:
            raise SystemExit("--auth virtual needs --database-url")
        return Auth({**env, "API_KEY": STATIC_KEY}, asyncio.run(virtual_key(database_url)))
    return Auth(env) if env else NO_AUTH


async def virtual_key(database_url: str) -> str:
    """A fresh virtual key with rpm, tpm and a budget set (never reached): its secret."""
    from modelrouter.tenants import KeyStore, NewKey  # noqa: PLC0415 - only for this mode

    store = KeyStore.from_url(database_url, pool_size=1)
    await store.start()
    try:
        new = NewKey(
            name=f"bench-{uuid.uuid4().hex[:12]}",
            rpm=10_000_000,
            tpm=10**12,
            budget_usd=1_000_000.0,  # reserve and settle too (spend/budgets)
        )
        _, secret = await store.create(new)
    finally:
        await store.close()
    return secret


def send(port: int, path: str, count: int, key: str | None = None) -> None:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        connection.request("POST", path, BODY, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    connection.close()


def instructions(
    source: str | None, mock_port: int, path: str, count: int, *, auth: Auth = NO_AUTH
) -> int:
    """Instructions the gateway of `source` (None: this tree) executes from start to exit,
    serving `count` requests to `path`."""
    port = procs.free_port()
    env = {**os.environ, **gateway_env(mock_port), **auth.env}
    if source is not None:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory(prefix="modelrouter-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += [sys.executable, "-m", "modelrouter", "serve", "--port", str(port)]
        # `python -m` puts its working directory first on sys.path, before PYTHONPATH: the
        # other revision runs from its own worktree, or this tree's code would be measured.
        process = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter
            command, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            procs.wait_listening(port, timeout=300)
            send(port, path, count, auth.key)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        with open(out, "rb") as file:
            found = _TOTAL.search(file.read())
    if found is None:
        raise RuntimeError("callgrind wrote no summary")
    return int(found.group(1))


def per_request(
    source: str | None, mock_port: int, path: str, few: int, many: int, *, auth: Auth = NO_AUTH
) -> float:
    first = instructions(source, mock_port, path, few, auth=auth)
    return (instructions(source, mock_port, path, many, auth=auth) - first) / (many - few)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.instructions")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--few", type=int, default=300, help="requests of the first run")
    parser.add_argument("--many", type=int, default=1300, help="requests of the second run")
    parser.add_argument("--paths", default="/chat,/stream", help="comma-separated routes")
    parser.add_argument(
        "--auth", choices=("none", "static", "virtual"), default="none", help="the client key"
    )
    parser.add_argument("--database-url", help="PostgreSQL for history and virtual keys")
    args = parser.parse_args(argv)
    if args.auth == "virtual" and args.compare:
        sys.stderr.write("--auth virtual measures this tree only (no --compare)\n")
        return 2
    if shutil.which("valgrind") is None:
        sys.stderr.write("valgrind is not installed (apt-get install valgrind)\n")
        return 2
    if not 0 <= args.few < args.many <= 100_000:
        sys.stderr.write("expected 0 <= --few < --many <= 100000\n")
        return 2
    auth = auth_of(args.auth, args.database_url)
    mock_port = procs.free_port()
    with ExitStack() as stack:
        stack.enter_context(procs.child(["mock-provider", "--port", str(mock_port)], mock_port))
        sources: list[tuple[str, str | None]] = [("this tree", None)]
        if args.compare:
            sources.append((args.compare, stack.enter_context(checkout(args.compare))))
        for path in (p.strip() for p in args.paths.split(",") if p.strip()):
            counts = [
                (label, per_request(src, mock_port, path, args.few, args.many, auth=auth))
                for label, src in sources
            ]
            mine = counts[0][1]
            for label, count in counts:
                ratio = f" (x{count / mine:.4f} of this tree)" if label != "this tree" else ""
                sys.stdout.write(
                    f"{path:<8} {label:<12} {count:>12,.0f} instructions/request{ratio}\n"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
