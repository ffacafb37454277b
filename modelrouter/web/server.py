"""Running the app: uvloop, handler cancellation on disconnect, graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal

import structlog
from aiohttp import web

from modelrouter.config import Settings, describe
from modelrouter.web.app import create_app
from modelrouter.web.runtime import RUNTIME

log = structlog.get_logger("modelrouter.server")
SHUTDOWN_TIMEOUT = 30.0  # in-flight requests get this long to finish after the drain


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then drain and shut down."""
    app = create_app(settings)
    # handler_cancellation: a client that disconnects cancels its handler, and so its upstream call.
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None
    )
    await runner.setup()
    # reuse_port: one of the workers of `serve --workers N`, all bound to the same port.
    site = web.TCPSite(
        runner, settings.host, settings.port, backlog=1024, reuse_port=reuse_port or None
    )
    await site.start()
    log.info("config", **describe(settings))
    if not settings.auth_enabled:
        log.warning(
            "auth_disabled",
            message="API_KEY is unset: serving WITHOUT authentication, on loopback only",
            host=settings.host,
        )
    if not settings.providers:
        log.warning("no_providers", message="no provider is enabled; requests will get 503")
    log.info("listening", host=settings.host, port=settings.port)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        app[RUNTIME].system.drain()
        log.info("draining", seconds=settings.drain_seconds)
        await asyncio.sleep(settings.drain_seconds)
        await runner.cleanup()
        log.info("stopped")


def raise_open_files_limit() -> None:
    """An open stream holds two sockets (client and upstream): use every descriptor allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an infinite hard limit may be refused
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings, *, reuse_port: bool = False) -> None:
    raise_open_files_limit()
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:  # pragma: no cover
        asyncio.run(serve(settings, reuse_port=reuse_port))
    else:
        uvloop.run(serve(settings, reuse_port=reuse_port))
