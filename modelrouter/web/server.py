"""Running the app: uvloop, bounded connections, and a shutdown that loses nothing.

After SIGTERM (or SIGINT):
1. `/ready` answers 503 at once; the listener stays open for DRAIN_SECONDS and what arrives is
   served (each answer closes its connection, so clients move to other replicas).
2. The listener closes, idle connections close, and requests in flight get until
   SHUTDOWN_TIMEOUT_SECONDS to finish.
3. Whatever still runs is ended by the router with a retryable `shutdown` error (a stream ends
   with `event: error`; a whole answer not yet sent is a 503), its slots and leases released.
4. The app's resources close; the process exits 0.
A second signal skips what is left of steps 1 and 2. A worker of `serve --workers N` is also
told by its parent, with signals that name the step (drain, hurry) instead of counting: one
signal sent to the whole process group reaches the worker twice (itself, and through the parent)
and is still one graceful shutdown. The whole takes at most DRAIN_SECONDS +
SHUTDOWN_TIMEOUT_SECONDS + about CLOSE_GRACE * 2: that must fit the orchestrator's grace period
(Kubernetes' `terminationGracePeriodSeconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
from collections.abc import Callable

import structlog
from aiohttp import web

from modelrouter.actors.system import SHUTDOWN
from modelrouter.config import Settings, describe, is_loopback
from modelrouter.web.app import create_app
from modelrouter.web.connections import Guard, GuardedRunner, GuardedServer, connection_limit
from modelrouter.web.runtime import METRICS, RUNTIME

log = structlog.get_logger("modelrouter.server")
CLOSE_GRACE = 1.0  # after the shutdown error, for handlers to write it and release their slots
POLL_SECONDS = 0.05  # how often the shutdown looks for requests still in flight


class StartError(Exception):
    """The gateway cannot start (a port in use, a dependency it cannot work with): one line for
    the operator, no traceback."""


def listen_error(settings: Settings, exc: OSError) -> StartError:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # The errno's own words: the event loop's message repeats the address, as a tuple.
    number = exc.errno
    if number is not None and not isinstance(exc, socket.gaierror):
        reason = os.strerror(number)
    else:  # a name that does not resolve: the resolver's words
        reason = exc.strerror or str(exc)
    return StartError(f"cannot listen on {host}:{settings.port}: {reason[:1].lower()}{reason[1:]}")


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    hurry: asyncio.Event | None = None,
    reuse_port: bool = False,
    told: tuple[int, int] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then drain and shut down; a second signal
    (or `hurry`) shortens the drain and the wait for requests in flight. `told`: the signals
    (drain, hurry) of a supervising parent (`serve --workers`). StartError if it cannot listen."""
    app = create_app(settings)
    guard = Guard(settings, app[METRICS], max_connections=connection_limit(settings))
    # handler_cancellation: a client that disconnects cancels its handler, and so its upstream call.
    runner = GuardedRunner(
        app,
        guard,
        handler_cancellation=True,
        shutdown_timeout=CLOSE_GRACE,
        access_log=None,
        keepalive_timeout=settings.keepalive_timeout,
    )
    await runner.setup()
    # reuse_port: one of the workers of `serve --workers N`, all bound to the same port.
    site = web.TCPSite(
        runner, settings.host, settings.port, backlog=1024, reuse_port=reuse_port or None
    )
    try:
        await site.start()
    except OSError as exc:  # in use, not ours to bind, no such address
        await runner.cleanup()
        raise listen_error(settings, exc) from None
    log.info("config", **describe(settings))
    if not settings.auth_enabled:
        log.warning(
            "auth_disabled",
            message="API_KEY is unset: serving WITHOUT authentication, on loopback only",
            host=settings.host,
        )
    elif not settings.api_keys and is_loopback(settings.host):
        log.warning(
            "auth_until_keys",
            message="API_KEY is unset: requests without a key pass until a virtual key exists",
            host=settings.host,
        )
    if not settings.providers:
        log.warning("no_providers", message="no provider is enabled; requests will get 503")
    log.info(
        "listening",
        host=settings.host,
        port=settings.port,
        max_connections=guard.max_connections,
    )
    stop = stop or asyncio.Event()
    hurry = hurry or asyncio.Event()
    Signals(stop, hurry).install(told)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await _shut_down(runner, settings, hurry)


class Signals:
    """The first SIGTERM/SIGINT this process receives starts the shutdown, any later one hurries
    it. A parent's `drain` and `hurry` set that state whatever came before: they count for
    nothing, so the parent passing on the signal that this process also got is no second one."""

    __slots__ = ("_hurry", "_stop", "received")

    def __init__(self, stop: asyncio.Event, hurry: asyncio.Event) -> None:
        self._stop = stop
        self._hurry = hurry
        self.received = 0  # SIGTERM/SIGINT only

    def signalled(self) -> None:
        self.received += 1
        if self.received > 1:
            self.hurry()
        self._stop.set()

    def drain(self) -> None:
        self._stop.set()

    def hurry(self) -> None:
        if not self._hurry.is_set():
            log.warning("shutdown_hurried")
        self._hurry.set()
        self._stop.set()

    def install(self, told: tuple[int, int] | None = None) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGINT: self.signalled,
            signal.SIGTERM: self.signalled,
        }
        if told is not None:
            handlers |= dict(zip(told, (self.drain, self.hurry), strict=True))
        loop = asyncio.get_running_loop()
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, handler)


async def _shut_down(runner: GuardedRunner, settings: Settings, hurry: asyncio.Event) -> None:
    app = runner.app
    runtime = app[RUNTIME]
    runtime.system.drain()
    runner.guard.draining = True
    log.info("draining", seconds=settings.drain_seconds, shutdown_timeout=settings.shutdown_timeout)
    await _wait(hurry, settings.drain_seconds)
    server = runner.server
    assert isinstance(server, GuardedServer)
    for site in list(runner.sites):
        await site.stop()  # no new connections
    server.pre_shutdown()  # idle keep-alive connections close; busy ones after their answer
    busy = await _settle(server, hurry, settings.shutdown_timeout)
    if busy:
        log.warning("shutdown_timeout", in_flight=busy, seconds=settings.shutdown_timeout)
    # Whatever is still routed ends now with a retryable error, and its handler releases its
    # slots; a handler that still has not finished after CLOSE_GRACE is cancelled by cleanup.
    await runtime.system.close(ending=SHUTDOWN, grace=CLOSE_GRACE)
    await _settle(server, None, CLOSE_GRACE)
    await runner.cleanup()
    log.info("stopped")


async def _wait(hurry: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hurry.wait(), seconds)


async def _settle(server: GuardedServer, hurry: asyncio.Event | None, seconds: float) -> int:
    """Wait up to `seconds` (or until `hurry`) for no request to be in flight; how many are."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    # Polled, and only here: an event would need bookkeeping on every request's path.
    while (busy := server.busy) and loop.time() < end and not (hurry and hurry.is_set()):  # noqa: ASYNC110
        await asyncio.sleep(POLL_SECONDS)
    return busy


def raise_open_files_limit() -> None:
    """An open stream holds two sockets (client and upstream): use every descriptor allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an infinite hard limit may be refused
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(
    settings: Settings, *, reuse_port: bool = False, told: tuple[int, int] | None = None
) -> None:
    """Serve until stopped (see `serve`); StartError if the gateway cannot start."""
    raise_open_files_limit()
    main = serve(settings, reuse_port=reuse_port, told=told)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)
