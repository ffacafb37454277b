"""What the HTTP handlers reach through the app: one typed key, created in `cleanup_ctx`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
import structlog
from aiohttp import web

from modelrouter.actors import ProviderActor, Relay, RouterSupervisor
from modelrouter.config import ProviderSettings, Settings, secrets_of
from modelrouter.events import Usage
from modelrouter.observability import REDACTOR, Metrics
from modelrouter.providers import build_adapter
from modelrouter.state import MemoryState, SharedState

log = structlog.get_logger("modelrouter.web")


class Runtime(msgspec.Struct, kw_only=True):
    settings: Settings
    metrics: Metrics
    state: SharedState
    router: RouterSupervisor
    api_keys: tuple[bytes, ...] = ()
    draining: bool = False


class Summary:
    """What a handler learned about its request, for the middleware's end line and metrics."""

    __slots__ = ("error", "relay", "started", "usage")

    def __init__(self, started: float) -> None:
        self.started = started  # time.perf_counter() when the request arrived
        self.relay: Relay | None = None  # provider, model and attempts of the routed request
        self.usage: Usage | None = None
        self.error: str | None = None  # the error type, also when a started stream was cut


RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = web.RequestKey("request_id", str)
SUMMARY = web.RequestKey("summary", Summary)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)


def _session(provider: ProviderSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=provider.max_concurrency, ttl_dns_cache=300, keepalive_timeout=30
    )
    # Deadlines are enforced per attempt (asyncio.timeout); only connecting gets its own bound.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the state backend, one session per provider, the actors; tear them down in reverse."""
    settings, metrics = app[SETTINGS], app[METRICS]
    REDACTOR.add(secrets_of(settings))
    state: SharedState = MemoryState()
    sessions = [_session(p) for p in settings.providers]
    actors = [
        ProviderActor(
            p, build_adapter(p), settings=settings, session=s, state=state, metrics=metrics
        )
        for p, s in zip(settings.providers, sessions, strict=True)
    ]
    router = RouterSupervisor(actors, metrics=metrics, aliases=settings.model_aliases)
    router.start()
    app[RUNTIME] = Runtime(
        settings=settings,
        metrics=metrics,
        state=state,
        router=router,
        api_keys=tuple(k.encode() for k in settings.api_keys),
    )
    try:
        yield
    finally:
        await router.close()
        for session in sessions:
            await session.close()
        await state.close()
