"""What the HTTP handlers reach through the app: one typed key, created in `cleanup_ctx`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
import structlog
from aiohttp import web

from modelrouter.actors import HealthChanged, ProviderActor, RouterSupervisor
from modelrouter.config import ProviderSettings, Settings, secrets_of
from modelrouter.observability import REDACTOR, Metrics
from modelrouter.providers import build_adapter
from modelrouter.state import HealthListener, HealthRecord, SharedState, create_state

log = structlog.get_logger("modelrouter.web")


class Runtime(msgspec.Struct, kw_only=True):
    settings: Settings
    metrics: Metrics
    state: SharedState
    router: RouterSupervisor
    api_keys: tuple[bytes, ...] = ()
    draining: bool = False


RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = web.RequestKey("request_id", str)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)


def _session(provider: ProviderSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=provider.max_concurrency, ttl_dns_cache=300, keepalive_timeout=30
    )
    # Deadlines are enforced per attempt (asyncio.timeout); only connecting gets its own bound.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)


def _tell_provider(router: RouterSupervisor) -> HealthListener:
    """Health changed elsewhere: the provider's actor hears it through its mailbox."""

    def tell(provider: str, record: HealthRecord) -> None:
        actor = router.providers.get(provider)
        if actor is not None:
            actor.tell_system(HealthChanged(record))

    return tell


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the state backend, one session per provider, the actors; tear them down in reverse."""
    settings, metrics = app[SETTINGS], app[METRICS]
    REDACTOR.add(secrets_of(settings))
    state = create_state(settings, metrics)
    sessions = [_session(p) for p in settings.providers]
    actors = [
        ProviderActor(
            p, build_adapter(p), settings=settings, session=s, state=state, metrics=metrics
        )
        for p, s in zip(settings.providers, sessions, strict=True)
    ]
    router = RouterSupervisor(actors, metrics=metrics)
    state.watch_health(_tell_provider(router))
    await state.start()  # bounded: serving starts degraded when Redis does not answer
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
