"""Client connections, each bounded: a head-and-body deadline, an idle timeout, a cap on how many.

aiohttp's server bounds an idle keep-alive connection (`keepalive_timeout`) but not a request
that arrives slowly: a connection that sends nothing, half a head, or `Content-Length: 100` and
one byte would stay open for as long as the client likes. Here:

- HEADER_TIMEOUT_SECONDS: from a connection's start, or from the first byte of its next request,
  the request's head and body must have arrived within it. If not, the client gets a 408 (in the
  handler, whose body read fails with it; or written here, when no handler has the request yet)
  and the connection is closed.
- KEEPALIVE_TIMEOUT_SECONDS: aiohttp's own idle timer, counted here when it closes a connection.
- MAX_CONNECTIONS: at the cap, a new connection takes the place of the oldest idle one (waiting
  for a request: new, idle keep-alive, or a head still partial), as nginx does when it runs out;
  when every connection is serving a request, the new one is closed at once. Either way the
  process keeps descriptors for its upstream and Redis connections, and `/health` answers even
  while a client holds thousands of idle connections.
- A request the HTTP parser rejects is one rate-limited WARNING line (no traceback: a client
  could flood the log with them) and a JSON 400 that echoes nothing the client sent.
- What aiohttp answers before any middleware runs (an `Expect` it does not know: a plain-text
  417 quoting the header) goes through the front middleware too: our JSON, a request id.

This extends aiohttp's `RequestHandler` (the `web_protocol` module) and `Server`: pyproject.toml
bounds aiohttp to the minor releases tested, `check_internals` (run by `serve` at start-up) finds
what a release lacks, and the fault suite's raw-socket tests pin the behaviour.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from modelrouter.config import Settings
from modelrouter.errors import ApiError
from modelrouter.internals import require
from modelrouter.observability import Metrics
from modelrouter.web.errors import SEED_ERRORS, error_response
from modelrouter.web.middleware import Handler, front, new_request_id

log = structlog.get_logger("modelrouter.connections")
# What this module uses of aiohttp beyond its public API (`check_internals`).
HANDLER_INTERNALS = (
    "_force_close",
    "_lingering_time",
    "_loop",
    "_manager",
    "_messages",
    "_process_keepalive",
    "_request_count",
    "_request_in_progress",
    "_waiter",
)
SERVER_INTERNALS = ("_connections", "_kwargs", "_loop")
RUNNER_INTERNALS = ("_make_server",)
# Descriptors kept aside from MAX_CONNECTIONS' default besides upstream and Redis connections:
# the listening sockets, the event loop's own, log files, a scrape or two.
RESERVED_DESCRIPTORS = 64
MIN_CONNECTIONS = 16


def check_internals() -> None:
    """IncompatibleRelease when the installed aiohttp lacks what this module uses of its
    internals (a Server's attributes are set by its __init__: one is made, on a loop of its own
    that never runs)."""
    require("aiohttp", RequestHandler, HANDLER_INTERNALS)
    require("aiohttp", web.AppRunner, RUNNER_INTERNALS)
    require("aiohttp", RawRequestMessage, ("_replace",))
    loop = asyncio.new_event_loop()
    try:
        require("aiohttp", web.Server(_never_called, loop=loop), SERVER_INTERNALS)
    finally:
        loop.close()


async def _never_called(_: web.BaseRequest) -> web.StreamResponse:  # pragma: no cover
    raise AssertionError


def connection_limit(settings: Settings, *, descriptors: int | None = None) -> int:
    """MAX_CONNECTIONS, or what RLIMIT_NOFILE leaves once Redis' connections and the
    upstream ones are set aside: <PROVIDER>_MAX_CONCURRENCY or _MAX_CONNECTIONS each, the lower
    (a provider never holds more), but
    no more than one per client connection (a request uses one upstream connection at a time)."""
    if settings.max_connections is not None:
        return settings.max_connections
    if descriptors is None:
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    redis = settings.redis.max_connections + 2 if settings.redis_url else 0  # + pub/sub, probe
    left = descriptors - RESERVED_DESCRIPTORS - redis
    pools = sum(min(p.max_concurrency, p.max_connections) for p in settings.providers)
    upstream = min(pools, max(left, 0) // 2)
    return max(MIN_CONNECTIONS, left - upstream)


class LogLimiter:
    """At most `burst` lines, then one per `every` seconds; the next line says how many were
    left out (`suppressed`)."""

    __slots__ = ("_allowance", "_burst", "_every", "_last", "suppressed")

    def __init__(self, *, burst: int = 5, every: float = 1.0) -> None:
        self._burst = burst
        self._every = every
        self._allowance = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._allowance = min(self._burst, self._allowance + (now - self._last) / self._every)
        self._last = now
        if self._allowance < 1.0:
            self.suppressed += 1
            return False
        self._allowance -= 1.0
        return True


class Guard:
    """What every connection of one server shares: the limits, the metrics, the log limiter."""

    __slots__ = ("draining", "header_timeout", "limiter", "max_connections", "metrics", "open")

    def __init__(self, settings: Settings, metrics: Metrics, *, max_connections: int) -> None:
        self.header_timeout = settings.header_timeout
        self.max_connections = max_connections
        self.metrics = metrics
        self.limiter = LogLimiter()
        self.open = 0
        self.draining = False  # after SIGTERM: every response closes its connection
        metrics.connection_limit.set(max_connections)

    def bad_request(self, exc: BaseException | None, peer: str | None) -> None:
        self.metrics.bad_http_requests.inc()
        if self.limiter.allow():
            suppressed, self.limiter.suppressed = self.limiter.suppressed, 0
            # The class only: aiohttp's message quotes the raw bytes, which may hold a secret.
            kind = type(exc).__name__ if exc is not None else "unknown"
            log.warning("bad_http_request", error=kind, peer=peer, suppressed=suppressed)


def _timeout_error(seconds: float) -> ApiError:
    return ApiError(
        408,
        "request_timeout",
        f"the request's head and body did not arrive within HEADER_TIMEOUT_SECONDS ({seconds:g} s)",
    )


def _raw_408(seconds: float) -> bytes:
    """A whole 408 response, written straight to a connection that no handler serves."""
    request_id = new_request_id()
    error = _timeout_error(seconds)
    body = SEED_ERRORS.body(error, request_id)
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol, with the head-and-body deadline and the connection cap."""

    __slots__ = ("_counted", "_due", "_guard", "_incomplete", "_rejected", "_timer")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._due: float | None = None  # when the request being received must be complete
        self._timer: asyncio.TimerHandle | None = None  # one per connection, re-armed lazily
        self._incomplete: Any = None  # the StreamReader of a request whose body is still due
        self._rejected = False  # closed at once: aiohttp never saw this connection
        self._counted = False  # in `guard.open`

    @property
    def idle(self) -> bool:
        """Waiting for a request (a new connection, an idle keep-alive, a head still partial)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._force_close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open >= guard.max_connections:
            manager = self._manager
            assert isinstance(manager, GuardedServer)
            victim = manager.idle_connection()
            if victim is None:  # every connection is serving a request: shed this one
                self._rejected = True
                guard.metrics.rejected_connections.inc()
                transport.close()
                return
            victim.evict()
        self._counted = True
        guard.open += 1
        guard.metrics.open_connections.inc()
        super().connection_made(transport)
        self._arm()

    def evict(self) -> None:
        """Close this idle connection to make room for a new one (as nginx reuses its idle
        connections when it runs out)."""
        self._guard.metrics.evicted_connections.inc()
        self._uncount()
        self.force_close()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.open -= 1
            self._guard.metrics.open_connections.dec()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._rejected:
            return
        self._uncount()
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._due is None and self._incomplete is None:
            self._arm()  # the first byte of the next request
        count = self._request_count
        super().data_received(data)
        if self._request_count != count and self._messages:
            payload = self._messages[-1][1]
            if payload.is_eof():
                self._due = None
            else:
                self._incomplete = payload
                payload.on_eof(self._body_arrived)

    def _body_arrived(self) -> None:
        self._incomplete = None
        self._due = None

    def _arm(self) -> None:
        loop = self._loop
        self._due = due = loop.time() + self._guard.header_timeout
        if self._timer is None:
            self._timer = loop.call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        due = self._due
        if due is None or self.transport is None:
            return
        if self._loop.time() < due:  # re-armed since this timer was set
            self._timer = self._loop.call_at(due, self._check)
            return
        self._due = None
        self._time_out()

    def _time_out(self) -> None:
        guard = self._guard
        guard.metrics.connection_timeouts.labels("header").inc()
        payload, self._incomplete = self._incomplete, None
        self._lingering_time = 0.0  # nothing more is read from this client
        if self._request_in_progress:
            # A handler has a request: it answers (408 if it waits for the late body), and
            # the connection closes after that answer.
            self.close()
            if payload is not None and not payload.is_eof():
                payload.set_exception(_timeout_error(guard.header_timeout))
            return
        if payload is None and self.transport is not None:
            self.transport.write(_raw_408(guard.header_timeout))
        self.force_close()  # closing flushes what was written first

    def _process_keepalive(self) -> None:
        closed = self._force_close
        super()._process_keepalive()
        if self._force_close and not closed:
            self._guard.metrics.connection_timeouts.labels("keepalive").inc()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a request body it could not decode a second time, when it reads the
        rest of it after the answer: that is the client's fault, so the same warning."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            self._guard.bad_request(exc, None)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,  # noqa: ARG002 - aiohttp's text quotes the client's bytes
    ) -> web.StreamResponse:
        """Parser errors (400) and anything that escaped the middleware: a JSON error that
        echoes nothing the client sent, and the connection closed."""
        if request.writer.output_size > 0 or isinstance(exc, ConnectionResetError):
            # The answer had begun, or the client is gone (the middleware counted it): close.
            raise ConnectionError("response already started")
        if status == 400:
            self._guard.bad_request(exc, request.remote)
            type_, text = "bad_request", "malformed HTTP request"
        else:  # a bug: the front middleware answers every handler error itself
            log.error("unhandled_error", status=status, exc_info=exc)
            type_, text = "internal_error", "internal error"
        # Which API the request was for is not known (it could not be parsed): the seed's shape.
        response = error_response(SEED_ERRORS, ApiError(status, type_, text), new_request_id())
        response.force_close()
        return response


def _raising(exc: web.HTTPException) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        raise exc

    return handler


class GuardedServer(web.Server):
    """aiohttp's `Server`, making `GuardedHandler`s."""

    def __init__(self, made: web.Server, guard: Guard) -> None:
        self._app_handler = made.request_handler
        super().__init__(
            self._handle,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self.guard = guard
        self._app_request = self.request_factory
        self.request_factory = self._request

    def _request(self, message: Any, *args: Any) -> web.BaseRequest:
        if self.guard.draining:  # answered with `Connection: close`: the client moves on
            message = message._replace(should_close=True)
        return self._app_request(message, *args)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await self._app_handler(request)
        except web.HTTPException as exc:
            # Raised before any middleware ran: aiohttp checks an `Expect` header first (a
            # plain-text 417 that quotes it). Answered by the front middleware like any error:
            # our format, a request id, counted.
            return await front(cast(web.Request, request), _raising(exc))

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def idle_connection(self) -> GuardedHandler | None:
        """The oldest connection waiting for a request, if any."""
        for conn in self._connections:
            if isinstance(conn, GuardedHandler) and conn.idle:
                return conn
        return None

    @property
    def busy(self) -> int:
        """Connections whose handler is answering a request now."""
        return sum(1 for conn in self._connections if conn._request_in_progress)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` serving through a `GuardedServer`."""

    def __init__(self, app: web.Application, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.guard)
