"""What the HTTP handlers reach through the app: one typed key, created in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import web

from modelrouter.actors import HealthChanged, ProviderActor, Relay, RouterSupervisor
from modelrouter.config import Settings, secrets_of
from modelrouter.events import Usage
from modelrouter.observability import REDACTOR, Metrics
from modelrouter.providers import build_adapter
from modelrouter.state import HealthListener, HealthRecord, SharedState, create_state
from modelrouter.transport import open_pool

log = structlog.get_logger("modelrouter.web")


class Runtime(msgspec.Struct, kw_only=True):
    loop: asyncio.AbstractEventLoop
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


def _tell_provider(router: RouterSupervisor) -> HealthListener:
    """Health changed elsewhere: the provider's actor hears it through its mailbox."""

    def tell(provider: str, record: HealthRecord) -> None:
        actor = router.providers.get(provider)
        if actor is not None:
            actor.tell_system(HealthChanged(record))

    return tell


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the state backend, one connection pool per provider, the actors; tear them down
    in reverse."""
    settings, metrics = app[SETTINGS], app[METRICS]
    REDACTOR.add(secrets_of(settings))
    state = create_state(settings, metrics)
    adapters = [build_adapter(p) for p in settings.providers]
    # Deadlines are enforced per attempt (asyncio.timeout_at), connecting included.
    pools = [
        open_pool(p, settings, url=a.url) for p, a in zip(settings.providers, adapters, strict=True)
    ]
    actors = [
        ProviderActor(p, a, settings=settings, pool=pool, state=state, metrics=metrics)
        for p, a, pool in zip(settings.providers, adapters, pools, strict=True)
    ]
    router = RouterSupervisor(actors, metrics=metrics, aliases=settings.model_aliases)
    state.watch_health(_tell_provider(router))
    await state.start()  # bounded: serving starts degraded when Redis does not answer
    router.start()
    app[RUNTIME] = Runtime(
        loop=asyncio.get_running_loop(),
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
        for pool in pools:
            await pool.close()
        await state.close()
