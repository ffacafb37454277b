"""The actor system: the composition root of the actor side and the only door the web layer uses.

It wires the state backend, one adapter and connection pool per provider, the provider actors
and the router, and offers what a front needs and nothing more:

- `route(request, ...) -> Relay`: answer a request; its events (`Answering`, chunks, `Done` or
  `Failed`) arrive in the relay; with CACHE_MODE on, through the response cache (first event
  `CacheStatus`), which the request's `cache` policy may skip;
- `join(request, ...) -> Relay | None`: the request answered by the response cache alone (a
  stored answer, or an identical request's in flight), else None: route it (and again if
  the relay ends with `ALONE`);
- `stream_slot()`: one of MAX_CONCURRENT_STREAMS, held while a stream calls upstream;
- `snapshot()`: frozen views of every provider and of the system, for /health, /ready, metrics;
- `on_health_change(listener)`: hear each change of a provider's state;
- `start()`, `drain()`, `close()`.

The secrets of its configuration belong to it: it redacts upstream text with them, and lends
them to the process's log redaction while it runs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from types import TracebackType

from modelrouter.actors.messages import HealthChanged, Route
from modelrouter.actors.provider import ProviderActor
from modelrouter.actors.reconfigure import (
    Plan,
    Reloaded,
    drain,
    fleet_deployments,
    plan_reload,
    timed_deployments,
)
from modelrouter.actors.relay import Relay
from modelrouter.actors.router import SHUTDOWN, STOPPED, Overloaded, RouterSupervisor
from modelrouter.actors.upstream import Upstream
from modelrouter.actors.views import ProviderView, SystemView
from modelrouter.cache import ALONE, USE_CACHE, CachePolicy, build_cache
from modelrouter.config import ProviderSettings, Settings, secrets_of, upstream_secrets
from modelrouter.events import Failed
from modelrouter.observability import REDACTOR, Metrics
from modelrouter.observability.recent import Recent
from modelrouter.providers import build_adapter
from modelrouter.redact import Redactor
from modelrouter.routing import PlanError, Planner
from modelrouter.routing.fleet import Fleet
from modelrouter.routing.hedging import Hedging
from modelrouter.routing.hedging import configured as hedging_configured
from modelrouter.schemas import ChatRequest
from modelrouter.state import HealthRecord, Lease, SharedState, create_state
from modelrouter.state.connect import connect
from modelrouter.tenants.cost import Pricing
from modelrouter.tenants.prices import price_table
from modelrouter.transport import Pool, open_pool

__all__ = [
    "ALONE",
    "SHUTDOWN",
    "USE_CACHE",
    "ActorSystem",
    "CachePolicy",
    "Overloaded",
    "ProviderView",
    "Reloaded",
    "StreamSlot",
    "SystemView",
    "TooManyStreams",
]

STREAM_LEASE_KEY = "streams"
HealthListener = Callable[[ProviderView], None]


class TooManyStreams(Exception):
    """Every one of MAX_CONCURRENT_STREAMS is taken (fleet-wide with Redis): a 429."""


def hedging_of(settings: Settings) -> Hedging | None:
    """The hedging policy `settings` call for (HEDGE, the groups' `hedge:`), or None."""
    if not hedging_configured(settings.hedge, settings.model_groups):
        return None
    groups = {g.name: g.hedge for g in settings.model_groups}
    return Hedging(settings.hedge, groups, default_model=settings.default_model)


class ActorSystem:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        state: SharedState | None = None,
        recent: Recent | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recent = recent  # the console's last hour, per deployment (None: not recorded)
        self.secrets = secrets_of(settings)
        self.redactor = Redactor(self.secrets)
        self.state = state if state is not None else create_state(settings, metrics)
        # The price table, read once: the requests' cost (web) and the attempt spans' price.
        self.pricing = Pricing(price_table(settings.tenants.prices))
        self._listeners: list[HealthListener] = []
        self._pools: list[Pool] = []
        # The deployments a `latency` group ranks: only their attempts are timed.
        self._timed = timed_deployments(settings)
        actors = [self._provider(p) for p in settings.providers]
        self.hedging = hedging_of(settings)
        self._refresher: asyncio.Task[None] | None = None
        self.router = RouterSupervisor(
            actors,
            metrics=metrics,
            redact=self.redactor,
            aliases=settings.model_aliases,
            groups=settings.model_groups,
            default_model=settings.default_model,
            prices=self.pricing.table if settings.model_groups else None,
            hedging=self.hedging,
            continue_on_cut=settings.continue_on_cut,
        )
        self._reloads: set[asyncio.Task[None]] = set()  # drains of what reloads retired
        self._shared = fleet_deployments(settings)
        self.fleet: Fleet | None = None  # with Redis: least-busy and latency fleet-wide
        self._held: list[list[str]] = []  # secrets of retired deployments, until drained
        self.cache = build_cache(settings, metrics, route=self.router.route, chain=self._chain)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.draining = False
        self._closed = False
        self._slots = 0  # stream slots held by this process's handlers
        # A shared backend's leases expire unless renewed (a dead replica's come back); one
        # process alone releases its own in `finally` and needs neither TTL nor renewal.
        self._lease_ttl = settings.stream_lease_ttl if self.state.leases_expire else math.inf

    def _provider(self, provider: ProviderSettings, fresh: bool = False) -> ProviderActor:
        return ProviderActor(
            provider,
            self._upstream(provider),
            settings=self.settings,
            state=self.state,
            metrics=self.metrics,
            on_change=self._health_changed,
            fresh=fresh,
            window=None if self.recent is None else self.recent.ring(provider.name),
            pricing=self.pricing,
        )

    def _upstream(self, provider: ProviderSettings) -> Upstream:
        adapter = build_adapter(provider)
        pool = open_pool(provider, self.settings, url=adapter.url)  # proxy, CAs, bounds
        self._pools.append(pool)
        return Upstream(
            adapter,
            pool,
            self.redactor,
            Redactor(upstream_secrets(provider)),
            timed=provider.name in self._timed,
        )

    def _retune(self, actor: ProviderActor, provider: ProviderSettings) -> Pool:
        old = actor.upstream.pool
        actor.retune(provider, self._upstream(provider))
        return old

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the state backend (bounded: a Redis that does not answer means serving
        degraded) and start every actor."""
        self.loop = asyncio.get_running_loop()
        REDACTOR.add(self.secrets)
        self.state.watch_health(self._heard)
        await self.state.start()
        await self.router.start()
        if self.settings.redis_url is not None:
            client = connect(self.settings.redis_url, self.settings.redis, name="modelrouter-fleet")
            self.fleet = Fleet(client, self.settings.redis.key_prefix, self._fleet_actors)
            self.fleet.start()
        self._keep_hedging_fresh()
        self.running = True

    def _fleet_actors(self) -> list[ProviderActor]:
        shared = self._shared
        return [a for name, a in self.router.providers.items() if name in shared]

    def drain(self) -> None:
        """Shutting down: report not ready, keep serving what arrives and what runs."""
        self.draining = True

    async def close(
        self, *, timeout: float = 0.0, ending: Failed = STOPPED, grace: float = 1.0
    ) -> None:
        """Take no new requests; give the running ones `timeout` seconds, then cut the rest
        (their clients get `ending`); give their handlers `grace` seconds to hand back their
        stream slots; then close the pools and the state backend. Closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        self.running = False
        for task in self._reloads:
            task.cancel()
        try:
            await asyncio.gather(*self._reloads, return_exceptions=True)
            if self.fleet is not None:
                await self.fleet.close()
            if self._refresher is not None:
                self._refresher.cancel()
                await asyncio.gather(self._refresher, return_exceptions=True)
            await self.router.close(timeout=timeout, ending=ending)
            await self._slots_back(grace)
            if self.cache is not None:
                await self.cache.close()
            for pool in self._pools:
                await pool.close()
            await self.state.close()
        finally:
            REDACTOR.remove(self.secrets)
            for held in self._held:
                REDACTOR.remove(held)
            self._held.clear()

    async def _slots_back(self, grace: float) -> None:
        """Wait (bounded) until every stream slot is released: the shared state must still be
        open when a cut stream's handler releases its lease."""
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while self._slots and loop.time() < end:  # noqa: ASYNC110 - only at shutdown
            await asyncio.sleep(0.01)

    # -- reload ------------------------------------------------------------------------------
    async def reload(self, settings: Settings) -> Reloaded:
        """Serve `settings`' deployments and groups from now on (the environment's part of
        the settings is the same: only the routing file changed). Requests already routed
        finish on what they started with; see modelrouter.actors.reconfigure."""
        if not self.running or self._closed:
            raise RuntimeError("the actor system is not running")
        old_secrets, self.secrets = self.secrets, secrets_of(settings)
        self.redactor.add(self.secrets)  # before any new deployment can answer
        REDACTOR.add(self.secrets)
        self._timed = timed_deployments(settings)
        self._shared = fleet_deployments(settings)
        self.settings = settings
        plan = plan_reload(
            self.router.providers,
            settings,
            build=self._provider,
            retune=self._retune,
            timed=self._timed,
        )
        planner = Planner(
            {actor.name: actor for actor in plan.actors},
            aliases=settings.model_aliases,
            groups=settings.model_groups,
            default_model=settings.default_model,
            prices=self.pricing.table if settings.model_groups else None,
        )
        await self.router.adopt(plan.actors, planner, retired=plan.retired)
        self._rehedge(settings)
        self._held.append(old_secrets)
        task = asyncio.get_running_loop().create_task(self._retire(plan, old_secrets))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return plan.report

    def _rehedge(self, settings: Settings) -> None:
        """A reloaded file's hedge settings: its groups' modes, or hedging turned on or off
        (the learnt first-byte windows are kept)."""
        hedging = hedging_of(settings)
        if hedging is not None and self.hedging is not None:
            hedging.adopt_windows(self.hedging)
        self.hedging = hedging
        self.router.rehedge(hedging)
        if hedging is None and self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        elif hedging is not None:
            if self._refresher is not None:
                self._refresher.cancel()
            self._refresher = None
            self._keep_hedging_fresh()

    def _keep_hedging_fresh(self) -> None:
        if self.hedging is not None and self.loop is not None:  # learnt off the request path
            self._refresher = self.loop.create_task(
                self.hedging.keep_fresh(self.state.share_samples), name="hedge-delays"
            )

    async def _retire(self, plan: Plan, secrets: list[str]) -> None:
        """After the retired attempts end: close what only they used, forget their secrets."""
        try:
            await drain(plan.marks, timeout=self.settings.max_operation_timeout)
        finally:  # cancelled by `close`: what the reload retired is closed all the same
            pools = [*plan.pools, *(actor.upstream.pool for actor in plan.retired)]
            for actor in plan.retired:
                await actor.close()
                if actor.name not in self.router.providers:  # not a new actor of that name
                    self.metrics.forget_provider(actor.name)
            for pool in pools:
                self._pools.remove(pool)
                await pool.close()
            if secrets in self._held:
                self._held.remove(secrets)
                self.redactor.remove(secrets)
                REDACTOR.remove(secrets)

    # -- requests ------------------------------------------------------------------------------
    def route(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        request_id: str,
        deadline: float,
        relay_size: int = 64,
        cache: CachePolicy = USE_CACHE,
        allow: tuple[str, ...] = (),
        scope: str = "",
    ) -> Relay:
        """Start answering `request` by `deadline` (loop time); Overloaded when the system
        cannot take it now. A whole-answer reader (`stream=False`) is woken only at the end.
        `cache` is what the request allows the response cache (when CACHE_MODE is on), `scope`
        the cache scope its answers belong to; `allow`, its key's model allow-list."""
        if self.cache is not None:
            return self.cache.route(
                request,
                stream=stream,
                request_id=request_id,
                deadline=deadline,
                relay_size=relay_size,
                policy=cache,
                loop=self.loop,
                allow=allow,
                scope=scope,
            )
        relay = Relay(maxsize=relay_size, eager=stream, loop=self.loop)
        self.router.route(Route(request, relay, deadline, stream, request_id, allow))
        return relay

    def join(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        request_id: str,
        deadline: float,
        relay_size: int = 64,
        cache: CachePolicy = USE_CACHE,
        allow: tuple[str, ...] = (),
        scope: str = "",
    ) -> Relay | None:
        """`request` answered without an upstream call of its own (CACHE_MODE on): a stored
        answer, or an identical request's answer in flight, joined. None: `route` it (a stream
        then holds a stream slot, which one served here does not). A relay from here that
        ends with `ALONE` before any answer: the call it joined failed, route it again."""
        if self.cache is None:
            return None
        return self.cache.join(
            request,
            stream=stream,
            request_id=request_id,
            deadline=deadline,
            relay_size=relay_size,
            policy=cache,
            loop=self.loop,
            allow=allow,
            scope=scope,
        )

    def chain(
        self, request: ChatRequest, allow: tuple[str, ...] = ()
    ) -> tuple[tuple[str, str], ...] | None:
        """The providers and models `request` may be answered by (within the allow-list
        `allow`), in a fixed order (None: it is refused): what a budget prices its
        reservation at."""
        return self._chain(request, allow)

    def _chain(
        self, request: ChatRequest, allow: tuple[str, ...] = ()
    ) -> tuple[tuple[str, str], ...] | None:
        """The providers and models `request` resolves to, in order (None: it is refused)."""
        try:
            candidates = self.router.planner.chain(request, allow=allow)
        except PlanError:
            return None
        return tuple((c.actor.name, c.model) for c in candidates)

    def stream_slot(self) -> StreamSlot:
        """`async with system.stream_slot():` holds one of MAX_CONCURRENT_STREAMS (for a
        stream that calls upstream)."""
        return StreamSlot(self)

    # -- views ---------------------------------------------------------------------------------
    def snapshot(self) -> SystemView:
        now = time.time()
        router = self.router
        return SystemView(
            providers=tuple(actor.view(now) for actor in router.providers.values()),
            requests_in_flight=len(router.tasks),
            requests_pending=len(router.pending),
            state_backend=self.state.mode,
            cache="off" if self.cache is None else self.cache.mode,
            running=self.running and not router.closed,
            draining=self.draining,
            hedges=None if self.hedging is None else dict(self.hedging.counts),
        )

    def on_health_change(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def _health_changed(self, view: ProviderView) -> None:
        for listener in self._listeners:
            listener(view)

    def _heard(self, provider: str, record: HealthRecord) -> None:
        """Another replica changed a provider's health: its actor hears it in its mailbox."""
        actor = self.router.providers.get(provider)
        if actor is not None:
            actor.tell_system(HealthChanged(record))


class StreamSlot:
    """One of MAX_CONCURRENT_STREAMS while the block runs (TooManyStreams when none is left).
    With a shared backend the lease is renewed while held, and expires if this process dies."""

    __slots__ = ("_lease", "_system")

    def __init__(self, system: ActorSystem) -> None:
        self._system = system
        self._lease: Lease | None = None

    async def __aenter__(self) -> StreamSlot:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()

    async def acquire(self) -> None:
        system = self._system
        settings, state, ttl = system.settings, system.state, system._lease_ttl
        lease = await state.acquire_lease(
            STREAM_LEASE_KEY, settings.max_concurrent_streams, ttl=ttl
        )
        if lease is None:
            system.metrics.rejected_streams.inc()
            raise TooManyStreams
        self._lease = lease
        system._slots += 1
        system.metrics.active_streams.inc()
        if state.leases_expire:
            state.keep_lease(lease, ttl=ttl, every=settings.stream_lease_renew)

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            self._system._slots -= 1
            self._system.metrics.active_streams.dec()
            # On its way even if this task is cancelled again.
            await self._system.state.release_lease(lease)
