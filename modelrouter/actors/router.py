"""RouterSupervisor: plans each request's candidates, runs its fallback, supervises providers.

A `Route` message spawns one routing job per request. The job asks provider actors for attempts
in order, awaits each attempt's result, and decides: done, fall over, or fail with the right
status. Chunks never pass through here; they go from the upstream job to the request's relay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from modelrouter.actors.base import Actor, ActorStopped, MailboxFull
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, Route
from modelrouter.actors.planning import Candidate, PlanError, plan
from modelrouter.actors.provider import ProviderActor
from modelrouter.actors.supervisor import Supervisor
from modelrouter.aliases import ModelAlias
from modelrouter.events import Done, Failed
from modelrouter.observability import REDACTOR, Metrics

log = structlog.get_logger("modelrouter.router")
TIMEOUT_REASONS = frozenset({"timeout", "first_chunk_timeout"})
STOPPED = Failed(503, "unavailable", "the router stopped before answering", 1.0)
SHUTDOWN = Failed(503, "shutdown", "the gateway is shutting down; retry the request", 1.0)


class RouterSupervisor(Actor[Route]):
    def __init__(
        self,
        providers: list[ProviderActor],
        *,
        metrics: Metrics,
        aliases: tuple[ModelAlias, ...] = (),
        max_requests: int = 10_000,
        mailbox_size: int = 4096,
        max_restarts: int = 5,
        restart_window: float = 60.0,
    ) -> None:
        super().__init__("router", mailbox_size=mailbox_size)
        self.providers = {p.name: p for p in providers}
        self.order = [p.name for p in providers]
        self.aliases = {alias.name: alias for alias in aliases}
        self.metrics = metrics
        self.max_requests = max_requests
        self.ending = STOPPED  # what a request still routed when the router closes gets
        # The routing jobs in flight, one per request, owned (and cancelled on close) by the
        # router. Plain tasks: a scheduler's bookkeeping bought nothing here but cost per request.
        self.jobs: set[asyncio.Task[None]] = set()
        self.supervisor = Supervisor(
            max_restarts=max_restarts,
            within=restart_window,
            on_restart=lambda a: metrics.actor_restarted(a.name),
            on_give_up=self._give_up,
        )

    def start(self) -> None:
        for provider in self.providers.values():
            if not provider.running:
                self.supervisor.watch(provider)
                provider.start()
        super().start()

    def _give_up(self, actor: Actor[Any]) -> None:
        if isinstance(actor, ProviderActor):
            actor.down = True
            self.metrics.set_provider_state(actor.name, "down")

    async def close(self, *, ending: Failed = STOPPED) -> None:
        """Stop; each request still routed ends with `ending` (its reader is answered)."""
        self.ending = ending
        await self.stop()
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        for provider in self.providers.values():
            await provider.close()

    # -- routing -------------------------------------------------------------------------------
    def tell(self, message: Route) -> None:
        """Start the request's routing job at once. Handling a Route only spawns that job, so a
        hop through the mailbox bought a task switch and nothing else; the bound stays:
        MailboxFull (503) when `max_requests` are in flight. The job runs in a copy of the
        caller's context, so its log lines carry the request's id."""
        if self._stopped:
            raise ActorStopped(self.name)
        if len(self.jobs) >= self.max_requests:
            raise MailboxFull(self.name)
        loop = self.loop
        if loop is None:
            raise ActorStopped(self.name)
        job = loop.create_task(self._route(message))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        message.relay.on_close(job.cancel)  # the client went away: stop routing its request

    async def _route(self, route: Route) -> None:
        try:
            candidates = plan(route.request, self.order, self.providers, self.aliases)
            route.relay.finish(await _Fallback(self, route, candidates).run())
        except PlanError as exc:
            route.relay.finish(Failed(400, exc.type, str(exc), param=exc.param))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in planning or fallback must answer the client, not hang it
            log.exception("routing_crashed")
            route.relay.finish(Failed(502, "internal_error", "the router failed on this request"))
        finally:
            # However this job ends (the router closing cancels it), the reader is answered: a
            # whole-answer reader needs no timer of its own. A no-op when already finished.
            route.relay.finish(self.ending)


class _Fallback:
    """The fallback walk for one request."""

    def __init__(self, router: RouterSupervisor, route: Route, candidates: list[Candidate]) -> None:
        self.router = router
        self.route = route
        self.candidates = candidates
        self.failures: list[tuple[str, AttemptResult]] = []
        self.rejections: list[tuple[Candidate, Admission]] = []
        self.falling_over: tuple[str, str] | None = None  # (failed provider, reason)

    async def run(self) -> Done | Failed:
        for candidate in self.candidates:
            ended = await self._try(candidate, force=False)
            if ended is not None:
                return ended
        if not self.failures:
            # Everyone is out. Rather than fail at once, try the one whose blacklist ends first.
            out = [
                (c, a) for c, a in self.rejections if a.rejection in ("blacklisted", "half_open")
            ]
            if out:
                candidate = min(out, key=lambda pair: pair[1].retry_after)[0]
                ended = await self._try(candidate, force=True)
                if ended is not None:
                    return ended
        return self._verdict()

    async def _try(self, candidate: Candidate, *, force: bool) -> Done | Failed | None:
        """Run one attempt; a final event ends the walk, None moves to the next candidate."""
        route = self.route
        loop = self.router._loop()
        if loop.time() >= route.deadline:
            return Failed(504, "timeout", "the request deadline passed before an answer")
        attempt = Attempt(
            route.request,
            candidate.model,
            route.relay,
            route.stream,
            route.deadline,
            route.request_id,
            force,
        )
        try:
            admission: Admission = await candidate.actor.ask(
                attempt, timeout=max(0.001, route.deadline - loop.time())
            )
        except ActorStopped:
            self.rejections.append((candidate, Admission("down", retry_after=30.0)))
            return None
        except (MailboxFull, TimeoutError):
            self.rejections.append((candidate, Admission("saturated", retry_after=1.0)))
            return None
        if admission.result is None:
            self.rejections.append((candidate, admission))
            return None
        return await self._await_result(candidate, admission)

    async def _await_result(
        self, candidate: Candidate, admission: Admission
    ) -> Done | Failed | None:
        route = self.route
        relay = route.relay
        relay.provider, relay.model = candidate.actor.name, candidate.model
        relay.attempts += 1
        if self.falling_over is not None:  # counted now that the next attempt really started
            self._count_fallback(*self.falling_over, candidate.actor.name)
            self.falling_over = None
        assert admission.result is not None
        try:
            result = await admission.result
        except asyncio.CancelledError:
            await admission.job.close()
            raise
        if result.ok:
            return Done(result.finish_reason)
        if result.reason is None:  # the upstream rejected the request itself
            return Failed(result.status or 400, "invalid_request", _clean(result.message))
        self.failures.append((candidate.actor.name, result))
        log.warning(
            "attempt_failed",
            provider=candidate.actor.name,
            reason=result.reason,
            status=result.status,
            detail=_clean(result.message),
        )
        if relay.emitted:
            message = f"{candidate.actor.name} failed mid-stream: {result.reason}: {result.message}"
            return Failed(502, "upstream_error", _clean(message))
        if not route.request.fallback:
            return self._verdict()
        self.falling_over = (candidate.actor.name, result.reason)
        return None

    def _count_fallback(self, failed: str, reason: str, next_provider: str) -> None:
        self.router.metrics.count_fallback(failed, next_provider, reason)
        log.info("fallback", from_provider=failed, to_provider=next_provider, reason=reason)

    def _verdict(self) -> Failed:
        """The final error when no attempt succeeded."""
        if self.failures:
            details = "; ".join(f"{name}: {r.reason} ({r.message})" for name, r in self.failures)
            if all(r.reason in TIMEOUT_REASONS for _, r in self.failures):
                return Failed(504, "timeout", _clean(f"every provider timed out: {details}"))
            return Failed(502, "upstream_error", _clean(f"every provider failed: {details}"))
        limited = [a.retry_after for _, a in self.rejections if a.rejection == "rate_limited"]
        if limited:
            wait = min(limited)
            self.router.metrics.rejected_all_providers.inc()
            return Failed(429, "rate_limited", "every provider is out of rate budget", wait)
        wait = min((a.retry_after for _, a in self.rejections), default=1.0)
        states = ", ".join(f"{c.actor.name}: {a.rejection}" for c, a in self.rejections)
        return Failed(503, "unavailable", f"no provider can take the request ({states})", wait)


def _clean(text: str) -> str:
    return REDACTOR(text)
