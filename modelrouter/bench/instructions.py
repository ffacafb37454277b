"""`make bench-instructions`: instructions per request, this tree against another revision.

Wall-clock figures on a shared machine move by 10-20% between runs; the number of instructions
the gateway executes to serve a request does not. This runs the gateway under valgrind's
callgrind, sends it `few` and then `many` requests one at a time (the difference removes
start-up, shutdown and first-request warm-up), for this tree and for `--compare REV` (from a
temporary git worktree), and prints instructions per request for each route asked
(`--paths`, `ROUTES`' names: `/chat` and `/stream` by default; a route the other revision
does not serve is shown as such), of every thread and of the main thread (the event loop's:
the request path, without e.g. the trace exporter's thread). It complements `make bench`: it
sees CPU work (the event loop's included), not waiting.

- `--routing-file` also measures this tree configured by a routing file of two deployments (one
  `weighted` group, both on the mock) against its environment-only figure.
- `--auth static` sends a key of API_KEY; `--auth virtual` a virtual key with `rpm`, `tpm` and a
  budget set, created first in `--database-url` (this tree only: older revisions have no
  virtual keys). With `--database-url` the history is on as well, for every run alike.
- `--hash-seed N` (1 by default) starts every gateway with PYTHONHASHSEED=N. With Python's
  random seed each run lays out its dictionaries and CPython's attribute cache differently
  (the cache is indexed by the names' hashes and addresses), and a run's collisions, paid on
  every request, moved a figure by up to 1.6% between runs of the same code; with one
  seed the two runs of a pair, and the revisions compared, share that layout. A seed is one
  layout: compare several (`--hash-seed 2`, ...) before reading a difference under 1%;
  `--hash-seed random` is Python's default.
- `--tracing RATIO` runs the gateways with traces on, sampled at RATIO
  (`parentbased_traceidratio`; the bench's requests carry no `traceparent`), exported to an
  OTLP/HTTP sink in this process that answers 200, keeps nothing, keeps the connection alive
  (as a collector does) and counts the spans it is sent: each figure then says how many spans
  the difference exported. The figure of every thread includes the exporter's, and it is made
  not to depend on the run's wall time (valgrind stretches it some 50 times, and the exporter
  wakes on a timer): `OTEL_BSP_SCHEDULE_DELAY` is set to a day, so the exporter sends only full
  batches (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512 spans) and, at the gateway's shutdown, every
  span left. Each sampled span is exported exactly once within its run, so the few/many
  difference counts the export work of the difference's spans; a run's one last export and its
  start-up cancel out, as do the per-export costs that do not depend on the spans (each run
  first sends one request that asks to be recorded, so that each has a last export). What the
  figure leaves out by design is the timer: an idle wake-up of the exporter, and the fixed part
  of an export of a few spans, are a cost per second and per export, not per request
  (docs/tracing.md gives both). The sampling draws are spread evenly (`_EVEN_DRAWS_MAIN`), so
  the difference samples exactly RATIO of its requests, in every run. A revision older than
  OTEL_BSP_* (`--compare`) still exports on its own timer.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
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
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

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
        # What runs on a timer, not per request: valgrind stretches the wall time some 50
        # times, so a flush each second would write a few rows at a time (its fixed cost
        # counted per request 50 times over, and varying with the run's pace), and a virtual
        # key would be read again every 30 s. Rows are written by full batches and at exit.
        "HISTORY_FLUSH_SECONDS": "86400",
        "SPEND_FLUSH_SECONDS": "86400",
        "KEY_CACHE_SECONDS": "3600",
    }


def hash_seed_env(seed: str) -> dict[str, str]:
    """The gateways' PYTHONHASHSEED (`--hash-seed`): {} for `random`; ValueError unless an
    integer Python takes (0 to 4294967295)."""
    if seed == "random":
        return {}
    if not seed.isdigit() or int(seed) > 4_294_967_295:
        raise ValueError(f"expected --hash-seed random or 0 to 4294967295, not {seed!r}")
    return {"PYTHONHASHSEED": str(int(seed))}


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


class Exported(NamedTuple):
    """What the bench's OTLP sink was sent: exports (HTTP requests) and the spans in them."""

    exports: int
    spans: int


class _SinkServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Sink)
        self.exported = Exported(0, 0)
        self.lock = threading.Lock()

    def count(self, spans: int) -> None:
        with self.lock:
            self.exported = Exported(self.exported.exports + 1, self.exported.spans + spans)


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every export, counts it and its spans, keeps nothing.
    HTTP/1.1, as a collector: the exporter's connection is kept alive between exports (an
    HTTP/1.0 sink would make every export open a connection, which no collector does)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        assert isinstance(self.server, _SinkServer)
        self.server.count(_spans_in(body, self.headers.get("Content-Encoding")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _spans_in(body: bytes, encoding: str | None) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    if encoding == "gzip":
        body = gzip.decompress(body)
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return sum(len(scope.spans) for spans in message.resource_spans for scope in spans.scope_spans)


class Sink(NamedTuple):
    endpoint: str  # for OTEL_EXPORTER_OTLP_ENDPOINT
    server: _SinkServer

    def exported(self) -> Exported:
        return self.server.exported


@contextmanager
def otlp_sink() -> Iterator[Sink]:
    """An OTLP/HTTP endpoint on loopback while in the block, counting what it is sent."""
    server = _SinkServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sink(f"http://127.0.0.1:{server.server_address[1]}", server)
    finally:
        server.shutdown()
        server.server_close()


# The exporter's worker never wakes on its timer during a run (a day): it exports when a batch
# is full and, at the gateway's shutdown, every span left; each span is exported exactly once
# within the run, whatever the run's wall time (valgrind stretches it some 50 times).
NO_TIMER_MS = 86_400_000


def tracing_env(endpoint: str, ratio: float) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": repr(ratio),
        "OTEL_BSP_SCHEDULE_DELAY": str(NO_TIMER_MS),
    }


# The routing-file scenario: the same mock, two deployments, one group, asked by its name.
ROUTING_FILE = """\
deployments:
  - {{name: groq, kind: openai, base_url: "{url}", api_key: bench-key, rpm: 0,
     models: {{fast: mock-model}}, weight: 3}}
  - {{name: groq-b, kind: openai, base_url: "{url}", api_key: bench-key-b, rpm: 0,
     models: {{fast: mock-model}}}}
models:
  fast: {{strategy: weighted}}
"""


def routed(body: bytes) -> bytes:
    """A route's body asking the routing file's group instead of the environment's groq."""
    return body.replace(b'"provider":"groq"', b'"model":"fast"').replace(
        b'"groq/mock-model"', b'"fast"'
    )


class NotServed(RuntimeError):
    """The gateway of a revision does not serve the route (it answered 404)."""


def send(
    port: int,
    route: str,
    count: int,
    key: str | None = None,
    *,
    routing: bool = False,
    traceparent: str | None = None,
) -> None:
    path, body = ROUTES[route]
    if routing:
        body = routed(body)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if traceparent is not None:
        headers["traceparent"] = traceparent
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        if response.status == 404:
            raise NotServed(route)
        if response.status != 200:
            raise RuntimeError(f"{route} answered {response.status}")
    connection.close()


class Count(NamedTuple):
    """Instructions of every thread, and of the main thread alone (the event loop: the
    request path, without the work of other threads such as the trace exporter's); and the
    spans the gateway exported (to the bench's sink, with `--tracing`)."""

    total: float
    main: float
    spans: int = 0


# The gateway's process, its sampling draws spread evenly: a request's decision is
# `random.random() < ratio` (the request path's only call of it; ids and retry jitter use the
# generator's other methods), and the i-th draw is 0 (kept) when i * ratio passes a whole
# number, else the largest draw there is (dropped): exactly floor(n * ratio) of the first n
# requests are sampled and the few/many difference has ratio * (many - few) of them, not a
# random number (with 600 requests at 0.01 the binomial's spread is +-40%). The draws come from
# a list iterator, a C call as the generator's is; the list is built at start-up, which the
# difference removes.
EVEN_DRAWS = (  # an expression of `r`, the ratio, and `math`
    "[0.0 if math.floor(i * r) > math.floor((i - 1) * r) else 1 - 2**-53"
    " for i in range(1, 200_002)]"
)
_EVEN_DRAWS_MAIN = (
    "import math, os, random, runpy; "
    "r = float(os.environ.get('OTEL_TRACES_SAMPLER_ARG') or 1); "
    f"random.random = iter({EVEN_DRAWS}).__next__; "
    "runpy.run_module('modelrouter', run_name='__main__', alter_sys=True)"
)
# Before the counted requests, one the caller asks to record (sampled flag set): every run then
# has spans to export at its end, so the first export's one-off work (imports, the connection)
# is in both runs of a pair and cancels, even at a ratio that samples none of the few.
RECORDED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def instructions(  # noqa: PLR0917 - the run's settings, in the order they are read
    source: str | None,
    mock_port: int,
    route: str,
    count: int,
    auth: Auth = NO_AUTH,
    routing: bool = False,
    *,
    sink: Sink | None = None,
) -> Count:
    """Instructions the gateway of `source` (None: this tree) executes from start to exit,
    serving `count` requests to `route` (NotServed if it does not serve it; `routing`:
    configured by ROUTING_FILE); with the `sink` it exports to, the spans it exported. A port
    another program took meanwhile: again, on another."""
    for tries in range(3):
        try:
            return _instructions(source, mock_port, route, count, auth, routing, sink)
        except procs.PortTaken:
            if tries == 2:
                raise
    raise AssertionError("unreachable")


def _instructions(  # noqa: PLR0917 - as instructions
    source: str | None,
    mock_port: int,
    route: str,
    count: int,
    auth: Auth,
    routing: bool,
    sink: Sink | None,
) -> Count:
    port = procs.free_port()
    env = {**os.environ, **gateway_env(mock_port), **auth.env}
    if source is not None:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory(prefix="modelrouter-callgrind-") as tmp:
        if routing:
            env["MODELROUTER_CONFIG"] = os.path.join(tmp, "router.yaml")
            with open(env["MODELROUTER_CONFIG"], "w") as file:
                file.write(ROUTING_FILE.format(url=env["GROQ_BASE_URL"]))
        out = os.path.join(tmp, "callgrind.out")
        # A file per thread (out-01 is the main thread's: the event loop's).
        command = ["valgrind", "--tool=callgrind", "--separate-threads=yes"]
        command.append(f"--callgrind-out-file={out}")
        command += [sys.executable, "-c", _EVEN_DRAWS_MAIN, "serve", "--port", str(port)]
        # `python -c` puts its working directory first on sys.path, before PYTHONPATH: the
        # other revision runs from its own worktree, or this tree's code would be measured.
        before = 0 if sink is None else sink.exported().spans
        process = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter
            command, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            procs.wait_listening(port, timeout=300, process=process)
            if sink is not None:
                send(port, route, 1, auth.key, routing=routing, traceparent=RECORDED)
            send(port, route, count, auth.key, routing=routing)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        counts = _summaries(tmp)
    # The gateway has exited: its last export (at shutdown) has been answered.
    spans = 0 if sink is None else sink.exported().spans - before
    return Count(sum(counts.values()), counts.get("callgrind.out-01", 0), spans)


def _summaries(folder: str) -> dict[str, int]:
    """Each thread's instructions, by the name of its callgrind file."""
    counts: dict[str, int] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".yaml"):
            continue
        with open(os.path.join(folder, name), "rb") as file:
            found = _TOTAL.search(file.read())
        if found is not None:
            counts[name] = int(found.group(1))
    if not counts:
        raise RuntimeError("callgrind wrote no summary")
    return counts


def per_request(  # noqa: PLR0917 - as instructions
    source: str | None,
    mock_port: int,
    route: str,
    few: int,
    many: int,
    auth: Auth = NO_AUTH,
    routing: bool = False,
    *,
    sink: Sink | None = None,
) -> Count | None:
    """Instructions per request (None: the revision does not serve the route); `spans`: those
    the `many` requests exported more than the `few` (the difference's sampled requests' spans,
    each exported once)."""
    try:
        first = instructions(source, mock_port, route, few, auth, routing, sink=sink)
    except NotServed:
        return None
    last = instructions(source, mock_port, route, many, auth, routing, sink=sink)
    requests = many - few
    return Count(
        (last.total - first.total) / requests,
        (last.main - first.main) / requests,
        last.spans - first.spans,
    )


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one refusal per bad option
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.instructions")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--few", type=int, default=300, help="requests of the first run")
    parser.add_argument("--many", type=int, default=1300, help="requests of the second run")
    parser.add_argument(
        "--paths", default="/chat,/stream", help=f"comma-separated, of: {', '.join(ROUTES)}"
    )
    parser.add_argument(
        "--routing-file",
        action="store_true",
        help="also measure this tree with a routing file of two deployments",
    )
    parser.add_argument(
        "--auth", choices=("none", "static", "virtual"), default="none", help="the client key"
    )
    parser.add_argument("--database-url", help="PostgreSQL for history and virtual keys")
    parser.add_argument(
        "--hash-seed",
        default="1",
        help="PYTHONHASHSEED of every gateway: an integer, or random (Python's default)",
    )
    parser.add_argument(
        "--tracing",
        type=float,
        metavar="RATIO",
        help="traces on, sampled at RATIO (0 to 1), exported to a sink in this process",
    )
    args = parser.parse_args(argv)
    try:
        seed = hash_seed_env(args.hash_seed)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.auth == "virtual" and args.compare:
        sys.stderr.write("--auth virtual measures this tree only (no --compare)\n")
        return 2
    if args.tracing is not None and not 0.0 <= args.tracing <= 1.0:
        sys.stderr.write("expected --tracing between 0 and 1\n")
        return 2
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
    os.environ.update(seed)  # every gateway started from here inherits it
    if not seed:
        os.environ.pop("PYTHONHASHSEED", None)
    auth = auth_of(args.auth, args.database_url)
    mock_port = procs.free_port()
    with ExitStack() as stack:
        sink = None
        if args.tracing is not None:  # every gateway started from here inherits it
            sink = stack.enter_context(otlp_sink())
            os.environ.update(tracing_env(sink.endpoint, args.tracing))
        stack.enter_context(procs.child(["mock-provider", "--port", str(mock_port)], mock_port))
        sources: list[tuple[str, str | None]] = [("this tree", None)]
        if args.compare:
            sources.append((args.compare, stack.enter_context(checkout(args.compare))))
        for route in routes:
            counts = [
                (label, per_request(src, mock_port, route, args.few, args.many, auth, sink=sink))
                for label, src in sources
            ]
            if args.routing_file:
                file_count = per_request(
                    None, mock_port, route, args.few, args.many, auth, True, sink=sink
                )
                counts.append(("routing file", file_count))
            mine = counts[0][1]
            for label, count in counts:
                sys.stdout.write(f"{route:<28} {label:<12} {_figure(count, mine, label)}\n")
                sys.stdout.flush()
    return 0


def _figure(count: Count | None, mine: Count | None, label: str) -> str:
    if count is None:
        return "not served"
    ratio = ""
    if label != "this tree" and mine is not None and mine.total:
        ratio = f" (x{count.total / mine.total:.4f} of this tree)"
    spans = f"; {count.spans} spans exported" if count.spans else ""
    return (
        f"{count.total:>12,.0f} instructions/request{ratio}; main thread {count.main:,.0f}{spans}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
