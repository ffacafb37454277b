"""ProviderActor: owns one provider's health, rate budget and in-flight attempts.

Admission happens in its loop (so the checks and the budget decrement are one step); the upstream
call then runs as a job in the actor's own aiojobs scheduler and reports back with an `Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from functools import partial
from itertools import count
from typing import Any

import aiojobs
import msgspec
import structlog

from modelrouter.actors.base import Actor
from modelrouter.actors.health import Health
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, HealthChanged, Outcome
from modelrouter.actors.relay import ClientGone
from modelrouter.actors.upstream import Upstream, run_attempt
from modelrouter.actors.views import ProviderState, ProviderView
from modelrouter.config import ProviderSettings, Settings
from modelrouter.observability import CURRENT_REQUEST_ID, Metrics
from modelrouter.state import HealthRecord, SharedState

log = structlog.get_logger("modelrouter.provider")
DOWN_RETRY_AFTER = 30.0  # a provider given up by its supervisor: what a client is told to wait


class _Ticket:
    __slots__ = ("epoch", "probe", "request_id")

    def __init__(self, epoch: int, probe: bool, request_id: str) -> None:
        self.epoch = epoch
        self.probe = probe
        self.request_id = request_id  # for the log lines this attempt's outcome causes


class Flush(msgspec.Struct, frozen=True):
    """An ask that returns once every message posted before it was handled."""


FLUSH = Flush()


class ProviderActor(Actor[Attempt | Outcome | HealthChanged | Flush]):
    def __init__(
        self,
        provider: ProviderSettings,
        upstream: Upstream,
        *,
        settings: Settings,
        state: SharedState,
        metrics: Metrics,
        mailbox_size: int = 4096,
        on_change: Callable[[ProviderView], None] | None = None,
    ) -> None:
        super().__init__(provider.name, mailbox_size=mailbox_size)
        self.provider = provider
        self.upstream = upstream
        self.adapter = upstream.adapter
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.on_change = on_change  # told of every change of this provider's state
        self.health = Health()
        self.down = False  # its supervisor gave up restarting it
        self.scheduler = aiojobs.Scheduler(limit=None, pending_limit=1, close_timeout=1.0)
        self._tickets: dict[int, _Ticket] = {}
        self._ids = count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self._rate_key = f"rpm:{provider.name}"
        self._m = metrics.provider(provider.name, rate_limited=provider.rate_limit > 0)

    # -- what others may read: a frozen copy -------------------------------------------------
    def status(self, now: float | None = None) -> ProviderState:
        return "down" if self.down else self.health.state(time.time() if now is None else now)

    def view(self, now: float | None = None) -> ProviderView:
        health = self.health
        state = self.status(now)
        return ProviderView(
            name=self.name,
            state=state,
            blacklisted_until=health.blacklisted_until if state == "blacklisted" else 0.0,
            failures=health.failures,
            last_reason=health.last_reason,
            in_flight=len(self._tickets),
            restarts=self.restarts,
            mailbox_depth=self.mailbox_depth,
            idle_connections=self.upstream.pool.idle,
        )

    def give_up(self) -> None:
        """Its supervisor stopped restarting it: it is down for good."""
        self.down = True
        self._changed()

    def _changed(self) -> None:
        self.metrics.set_provider_state(self.name, self.status())
        if self.on_change is not None:
            self.on_change(self.view())

    # -- the loop ------------------------------------------------------------------------------
    async def on_start(self) -> None:
        self._adopt(await self.state.load_health(self.name))
        self.health.probe_in_flight = any(t.probe for t in self._tickets.values())
        self._changed()

    def _adopt(self, record: HealthRecord) -> None:
        """Take a stored or another replica's record, its blacklist cut to this replica's
        BACKOFF_MAX_SECONDS (a record written before the cap, or by a differently set replica,
        must not keep a healthy provider out for longer)."""
        ceiling = time.time() + self.settings.backoff_max_seconds
        if record.blacklisted_until > ceiling:
            record = msgspec.structs.replace(record, blacklisted_until=ceiling)
        self.health.load(record)

    async def handle(self, message: Attempt | Outcome | HealthChanged | Flush) -> Any:
        if type(message) is Outcome:
            await self._finished(message)
            return None
        if type(message) is HealthChanged:
            # Another replica's view (pushed by the shared state): adopt it, no round trip.
            self._adopt(message.record)
            self._changed()
            return None
        if type(message) is Flush:
            return None
        assert isinstance(message, Attempt)
        return await self._admit(message)

    def orphaned(self, result: Any) -> None:
        if isinstance(result, Admission) and result.result is not None:
            result.result.cancel()  # nobody waits for this attempt any more: stop it

    async def _admit(self, attempt: Attempt) -> Admission:
        now = time.time()
        health = self.health
        if self.down:
            return Admission("down", retry_after=DOWN_RETRY_AFTER)
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
        result.add_done_callback(partial(self._abandoned, job))
        return Admission(result=result)

    def _abandoned(self, job: aiojobs.Job[None], result: asyncio.Future[AttemptResult]) -> None:
        """The router cancelled the result (its request is gone): close the attempt's job."""
        if result.cancelled() and not job.closed:
            closing = self._loop().create_task(job.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

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
        maximum = self.settings.backoff_max_seconds
        retry_after = outcome.retry_after
        if retry_after is not None and retry_after > maximum:
            # An upstream may ask for any wait; a blacklist never outlasts BACKOFF_MAX_SECONDS.
            log.warning(
                "retry_after_capped",
                provider=self.name,
                request_id=ticket.request_id,
                retry_after=retry_after,
                seconds=maximum,
            )
            retry_after = maximum
        if ticket.epoch != health.epoch:
            if retry_after:
                health.extend(now, retry_after)
                await self._publish()
            return
        assert outcome.reason is not None
        delay = health.fail(
            outcome.reason,
            now,
            base=self.settings.backoff_base_seconds,
            maximum=maximum,
            retry_after=retry_after,
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
        self._changed()

    async def close(self, *, settle: float = 1.0) -> None:
        """Stop the attempts still running, record how they ended, then stop the loop."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self.scheduler.close()  # each job ends and tells its Outcome
        if self.running:
            with contextlib.suppress(Exception):  # a loop too busy or crashed: stop anyway
                await self.ask(FLUSH, timeout=settle)
        await self.stop()
