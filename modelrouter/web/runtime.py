"""What the HTTP handlers reach through the app: one typed key, created in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from modelrouter.actors.system import ActorSystem
from modelrouter.config import Settings
from modelrouter.events import Answering, Usage
from modelrouter.observability import Metrics


class Runtime(msgspec.Struct, kw_only=True):
    loop: asyncio.AbstractEventLoop
    settings: Settings
    metrics: Metrics
    system: ActorSystem
    api_keys: tuple[bytes, ...] = ()


class Summary:
    """What a handler learned about its request, for the request's end line and metrics."""

    __slots__ = ("answering", "error", "started", "usage")

    def __init__(self, started: float) -> None:
        self.started = started  # time.perf_counter() when the request arrived
        self.answering: Answering | None = None  # the last provider, model and attempt tried
        self.usage: Usage | None = None
        self.error: str | None = None  # the error type, also when a started stream was cut


RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = web.RequestKey("request_id", str)
SUMMARY = web.RequestKey("summary", Summary)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the actor system for the app's lifetime; close it at cleanup."""
    settings, metrics = app[SETTINGS], app[METRICS]
    system = ActorSystem(settings, metrics)
    await system.start()
    app[RUNTIME] = Runtime(
        loop=asyncio.get_running_loop(),
        settings=settings,
        metrics=metrics,
        system=system,
        api_keys=tuple(k.encode() for k in settings.api_keys),
    )
    try:
        yield
    finally:
        await system.close()
