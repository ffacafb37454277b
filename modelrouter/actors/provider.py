"""ProviderActor: owns one provider's health, rate budget and in-flight attempts.

Admission happens in its loop (so the checks and the budget decrement are one step); the upstream
call then runs as a job in the actor's own aiojobs scheduler and reports back with an `Outcome`.
"""

from __future__ import annotations

import asyncio
import time
from itertools import count
from typing import Any

import aiojobs
import structlog

from modelrouter.actors.base import Actor
from modelrouter.actors.health import Health, HealthState
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, HealthChanged, Outcome
from modelrouter.actors.relay import ClientGone
from modelrouter.actors.upstream import Upstream, run_attempt
from modelrouter.config import ProviderSettings, Settings
from modelrouter.observability import CURRENT_REQUEST_ID, Metrics
from modelrouter.providers import Adapter
from modelrouter.state import SharedState
from modelrouter.transport import Pool

log = structlog.get_logger("modelrouter.provider")


class _Ticket:
    __slots__ = ("epoch", "probe", "request_id")

    def __init__(self, epoch: int, probe: bool, request_id: str) -> None:
        self.epoch = epoch
        self.probe = probe
        self.request_id = request_id  # for the log lines this attempt's outcome causes


class ProviderActor(Actor[Attempt | Outcome | HealthChanged]):
    def __init__(
        self,
        provider: ProviderSettings,
        adapter: Adapter,
        *,
        settings: Settings,
        pool: Pool,
        state: SharedState,
        metrics: Metrics,
        mailbox_size: int = 4096,
    ) -> None:
        super().__init__(provider.name, mailbox_size=mailbox_size)
        self.provider = provider
        self.adapter = adapter
        self.settings = settings
        self.upstream = Upstream(adapter, pool)
        self.state = state
        self.metrics = metrics
        self.health = Health()
        self.down = False  # its supervisor gave up restarting it
        self.scheduler = aiojobs.Scheduler(limit=None, pending_limit=1, close_timeout=1.0)
        self._tickets: dict[int, _Ticket] = {}
        self._ids = count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self._rate_key = f"rpm:{provider.name}"
        self._m = metrics.provider(provider.name, rate_limited=provider.rate_limit > 0)

    # -- read-only views for /health and /ready ------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    def status(self, now: float | None = None) -> HealthState | str:
        return "down" if self.down else self.health.state(time.time() if now is None else now)

    # -- the loop ------------------------------------------------------------------------------
    async def on_start(self) -> None:
        self.health.load(await self.state.load_health(self.name))
        self.health.probe_in_flight = any(t.probe for t in self._tickets.values())
        self.metrics.set_provider_state(self.name, self.status())

    async def handle(self, message: Attempt | Outcome | HealthChanged) -> Any:
        if type(message) is Outcome:
            await self._finished(message)
            return None
        if type(message) is HealthChanged:
            # Another replica's view (pushed by the shared state): adopt it, no round trip.
            self.health.load(message.record)
            self.metrics.set_provider_state(self.name, self.status())
            return None
        assert isinstance(message, Attempt)
        return await self._admit(message)

    def orphaned(self, result: Any) -> None:
        if isinstance(result, Admission) and result.job is not None:
            # Nobody waits for this attempt any more: stop it rather than let it run unowned.
            closing = asyncio.get_running_loop().create_task(result.job.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _admit(self, attempt: Attempt) -> Admission:
        now = time.time()
        health = self.health
        if self.down:
            return Admission("down", retry_after=30.0)
        if now < health.blacklisted_until and not attempt.force:
            return Admission("blacklisted", retry_after=health.blacklisted_until - now)
        probe = health.failures > 0
        if probe and health.probe_in_flight and not attempt.force:
            return Admission("half_open", retry_after=1.0)
        if len(self._tickets) >= self.provider.max_concurrency:
            return Admission("saturated", retry_after=1.0)
        budget = await self.state.acquire_rate(self._rate_key, self.provider.rate_limit)
        self._m.set_budget(budget.remaining)
        if not budget.allowed:
            self._m.rate_rejected.inc()
            return Admission("rate_limited", retry_after=budget.retry_after)
        ticket_id = next(self._ids)
        self._tickets[ticket_id] = _Ticket(health.epoch, probe, attempt.request_id)
        health.probe_in_flight |= probe
        result: asyncio.Future[AttemptResult] = self._loop().create_future()
        job = await self.scheduler.spawn(self._call(ticket_id, attempt, result))
        return Admission(result=result, job=job)

    async def _call(
        self, ticket: int, attempt: Attempt, result: asyncio.Future[AttemptResult]
    ) -> None:
        # This job's task was created from the actor loop: the handler's contextvars are not here.
        CURRENT_REQUEST_ID.set(attempt.request_id)
        outcome: AttemptResult | None = None
        started = time.perf_counter()
        try:
            outcome = await run_attempt(
                self.upstream,
                attempt,
                loop=self._loop(),
                provider_timeout=self.settings.provider_timeout,
                first_chunk_timeout=self.settings.first_chunk_timeout,
            )
        except ClientGone:
            pass
        except Exception as exc:
            log.exception("attempt_crashed", provider=self.name)
            outcome = AttemptResult(False, "bad_response", f"internal error: {type(exc).__name__}")
        finally:
            if outcome is not None:  # a cancelled attempt says nothing about upstream latency
                latency = self._m.upstream_ok if outcome.ok else self._m.upstream_error
                latency.observe(time.perf_counter() - started)
            self.tell_system(Outcome(ticket, outcome))
            if not result.done():
                if outcome is None:
                    result.cancel()
                else:
                    result.set_result(outcome)

    async def _finished(self, message: Outcome) -> None:
        ticket = self._tickets.pop(message.ticket, None)
        if ticket is None:
            return
        health = self.health
        if ticket.probe:
            health.probe_in_flight = False
        outcome = message.result
        if outcome is None:
            return  # cancelled: says nothing about the provider
        if outcome.ok:
            self._m.success.inc()
            if ticket.epoch == health.epoch and health.succeed():
                log.info("provider_recovered", provider=self.name, request_id=ticket.request_id)
                await self._publish()
            return
        if outcome.reason is None:
            return  # the client's request was wrong, not the provider
        self._m.failures[outcome.reason].inc()
        if outcome.cut_by_deadline or outcome.reason == "model_not_found":
            return  # the request ran out of time, or wants a model this provider lacks
        await self._blacklist(ticket, outcome)

    async def _blacklist(self, ticket: _Ticket, outcome: AttemptResult) -> None:
        health = self.health
        now = time.time()
        if ticket.epoch != health.epoch:
            if outcome.retry_after:
                health.extend(now, outcome.retry_after)
                await self._publish()
            return
        assert outcome.reason is not None
        delay = health.fail(
            outcome.reason,
            now,
            base=self.settings.backoff_base_seconds,
            maximum=self.settings.backoff_max_seconds,
            retry_after=outcome.retry_after,
        )
        log.warning(
            "provider_blacklisted",
            provider=self.name,
            request_id=ticket.request_id,
            reason=outcome.reason,
            failures=health.failures,
            seconds=round(delay, 3),
            detail=outcome.message,
        )
        await self._publish()

    async def _publish(self) -> None:
        await self.state.save_health(self.name, self.health.record())
        self.metrics.set_provider_state(self.name, self.status())

    async def close(self) -> None:
        await self.stop()
        await self.scheduler.close()
