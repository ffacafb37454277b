"""RouterSupervisor: the bounded owner of routing tasks, and the supervisor of provider actors.

Each routed request gets one task (at most `limit` at once, then up to `pending_limit` waiting
for a slot, then `Overloaded`). The task plans the request's candidates, runs its fallback walk
and always ends the request's relay, however it ends. Chunks never pass through here; they go
from the upstream job to the relay. Closing is polite first (no new requests, the running ones
get `timeout` seconds), then hard (the rest are cancelled and their readers told why).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable

import structlog

from modelrouter.actors.fallback import Fallback
from modelrouter.actors.messages import Route
from modelrouter.actors.provider import ProviderActor
from modelrouter.actors.relay import ClientGone
from modelrouter.actors.supervisor import Supervisor
from modelrouter.aliases import ModelAlias
from modelrouter.config import ModelGroup
from modelrouter.events import Done, Failed
from modelrouter.observability import Metrics
from modelrouter.routing import PlanError, Planner
from modelrouter.tenants.prices import PriceTable

log = structlog.get_logger("modelrouter.router")
STOPPED = Failed(503, "unavailable", "the router stopped before answering", 1.0, retryable=True)
SHUTDOWN = Failed(
    503, "shutdown", "the gateway is shutting down; retry the request", 1.0, retryable=True
)


class Overloaded(Exception):
    """No routing slot and no room to wait for one (or the router is closed): a 503."""


class RouterSupervisor:
    def __init__(
        self,
        providers: list[ProviderActor],
        *,
        metrics: Metrics,
        redact: Callable[[str], str],
        aliases: tuple[ModelAlias, ...] = (),
        groups: tuple[ModelGroup, ...] = (),
        default_model: str | None = None,
        prices: PriceTable | None = None,
        limit: int = 10_000,
        pending_limit: int = 0,
        max_restarts: int = 5,
        restart_window: float = 60.0,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.planner = Planner(
            self.providers,
            aliases=aliases,
            groups=groups,
            default_model=default_model,
            prices=prices,
        )
        self.metrics = metrics
        self.redact = redact
        self.limit = limit
        self.pending_limit = pending_limit
        self.tasks: set[asyncio.Task[None]] = set()
        # A queued route keeps its caller's context (its request id, its trace), to run in.
        self.pending: deque[tuple[Route, contextvars.Context]] = deque()
        self.closed = False
        self._ending = STOPPED  # what cancelled requests are told (see close)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.supervisor = Supervisor(
            max_restarts=max_restarts,
            within=restart_window,
            on_restart=lambda a: metrics.actor_restarted(a.name),
            on_give_up=lambda a: a.give_up() if isinstance(a, ProviderActor) else None,
        )

    async def start(self) -> None:
        """Start every provider actor and wait until each has loaded its state."""
        self._loop = asyncio.get_running_loop()
        for provider in self.providers.values():
            if not provider.running:
                self.supervisor.watch(provider)
                provider.start()
        await asyncio.gather(*(p.started() for p in self.providers.values()))

    # -- routing -------------------------------------------------------------------------------
    def route(self, route: Route) -> None:
        """Start the request's routing task now, or queue it for a slot; Overloaded when neither
        is possible. The task runs in a copy of the caller's context (its log lines carry the
        request's id)."""
        if self.closed or self._loop is None:
            raise Overloaded("the router is closed")
        if len(self.tasks) < self.limit:
            self._spawn(route)
        elif len(self.pending) < self.pending_limit:
            self.pending.append((route, contextvars.copy_context()))
        else:
            raise Overloaded(f"{self.limit} requests in flight")

    def _spawn(self, route: Route, context: contextvars.Context | None = None) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._route(route), context=context)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        route.relay.on_close(task.cancel)  # the client went away: stop routing its request

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        while self.pending and len(self.tasks) < self.limit:
            route, context = self.pending.popleft()
            if not route.relay.closed:
                self._spawn(route, context)

    async def _route(self, route: Route) -> None:
        """The one place that ends the route's relay (once), however the request ends."""
        relay = route.relay
        try:
            ending = await self._answer(route)
        except ClientGone:
            return  # the reader is gone: nobody to tell
        except asyncio.CancelledError:
            # The client left (its relay closed), or a hard close: then its reader hears why.
            if not relay.closed:
                relay.finish(self._ending)
            raise
        relay.finish(ending)

    async def _answer(self, route: Route) -> Done | Failed:
        try:
            candidates = self.planner.plan(route.request, stream=route.stream, allow=route.allow)
            fallback = Fallback(
                route, candidates, loop=self._loop_(), metrics=self.metrics, redact=self.redact
            )
            return await fallback.run()
        except PlanError as exc:
            return Failed(exc.status, exc.type, str(exc), param=exc.param, retryable=False)
        except (asyncio.CancelledError, ClientGone):
            raise
        except Exception:  # a bug in planning or fallback must answer the client, not hang it
            log.exception("routing_crashed")
            return Failed(502, "internal_error", "the router failed on this request")

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # -- closing -------------------------------------------------------------------------------
    async def close(self, *, timeout: float = 0.0, ending: Failed = STOPPED) -> None:
        """Take no new requests; give the running ones `timeout` seconds, then cancel the rest,
        their readers getting `ending`; then stop the providers."""
        self.closed = True
        self._ending = ending
        while self.pending:
            self.pending.popleft()[0].relay.finish(ending)
        if self.tasks and timeout > 0:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for provider in self.providers.values():
            await provider.close()
