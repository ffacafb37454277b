"""ProviderActor: owns one provider's health, its tickets (attempts in flight) and its rate key.

Its steps never await. Admission (down, blacklist, half-open probe, saturation) and the end of
an attempt (success, failure, blacklist) are synchronous methods: each runs to completion in
one go, so no other step can interleave, and no mailbox is needed to serialise them. What must
await is done outside a step: the shared rate budget (an atomic script of the state, awaited in
the request's task, so admissions to one provider never queue behind one another's round trip)
and the upstream call itself (in the request's routing task, so cancelling the request cancels
the attempt in one hop). The actor's loop keeps what is asynchronous and must stay ordered:
writing its health to the shared state, and adopting other replicas' changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from itertools import count
from typing import Any

import msgspec
import structlog

from modelrouter.actors.base import Actor
from modelrouter.actors.deployment_limits import DeploymentLimits
from modelrouter.actors.health import Health
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, HealthChanged
from modelrouter.actors.relay import ClientGone
from modelrouter.actors.upstream import Upstream, run_attempt
from modelrouter.actors.views import ProviderState, ProviderView
from modelrouter.config import ProviderSettings, Settings
from modelrouter.observability import Metrics, tracing
from modelrouter.observability.recent import Ring
from modelrouter.routing.latency import Latency
from modelrouter.state import HealthRecord, SharedState
from modelrouter.tenants.cost import Pricing, usd
from modelrouter.transport import PoolFull

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


class Publish(msgspec.Struct, frozen=True):
    """Write this provider's health to the shared state (its latest, whenever the loop gets
    to it: a burst of changes is written once)."""


FLUSH = Flush()
PUBLISH = Publish()


class ProviderActor(Actor[HealthChanged | Publish | Flush]):
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
        fresh: bool = False,
        window: Ring | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        """`fresh`: start healthy, whatever the shared state holds under this name (a reload
        gave the name another endpoint); a restart after a crash reloads it all the same."""
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
        self._tickets: dict[int, _Ticket] = {}
        self._ids = count(1)
        self._unpublished = False
        self._rate_key = f"rpm:{provider.name}"
        self.latency = Latency()  # recent time to first byte, for the `latency` strategy
        self.elsewhere = 0  # attempts in flight on the other replicas (routing/fleet.py)
        self._fresh = fresh
        self.window = window  # the console's last hour of attempts (None: not recorded)
        self.pricing = pricing  # an attempt span's cost (only recorded attempts are priced)
        self.budget_remaining: int | None = None  # at its last admission (rate-limited only)
        self._settling: set[asyncio.Task[None]] = set()  # its limits' settles still running
        self._tune(provider)

    def _tune(self, provider: ProviderSettings) -> None:
        """What the actor takes from its settings, for its attempts from now on."""
        settings = self.settings
        self.provider = provider
        self._rate_limit = provider.rate_limit
        # An attempt holds at most one connection: tickets bound the pool too.
        self._max_attempts = min(provider.max_concurrency, provider.max_connections)
        # A routing file's deployment may set its own timeouts; else the environment's apply.
        self._provider_timeout = provider.provider_timeout or settings.provider_timeout
        self._first_chunk_timeout = provider.first_chunk_timeout or settings.first_chunk_timeout
        self._connect_timeout = provider.connect_timeout or settings.connect_timeout
        self._m = self.metrics.provider(provider.name, rate_limited=provider.rate_limit > 0)
        # tpm and max_parallel_streams (routing file): None, and nothing to pay, without them.
        self._limits: DeploymentLimits | None = None
        if provider.tpm or provider.max_parallel_streams:
            self._limits = DeploymentLimits(
                self.state,
                provider.name,
                tpm=provider.tpm,
                max_parallel_streams=provider.max_parallel_streams,
                settling=self._settling,
                lease_ttl=settings.stream_lease_ttl,
                renew_every=settings.stream_lease_renew,
                default_output=settings.tenants.budget_reserve_tokens,
            )

    def retune(self, provider: ProviderSettings, upstream: Upstream) -> None:
        """A reload kept this deployment (same name, kind, base URL and key) with other
        settings: its health, budget key and latency stay; attempts from now on take the new
        settings and `upstream` (those running finish on the one they started with)."""
        self.upstream = upstream
        self.adapter = upstream.adapter
        self._tune(provider)

    def mark(self) -> int:
        """A mark of the attempts running now (their ids grow): see `ended_since`."""
        return next(reversed(self._tickets), 0)

    def ended_since(self, mark: int) -> bool:
        """Every attempt that was running at `mark` has ended (a reload's drain)."""
        oldest = next(iter(self._tickets), None)
        return oldest is None or oldest > mark

    # -- what others may read: a frozen copy -------------------------------------------------
    def status(self, now: float | None = None) -> ProviderState:
        return "down" if self.down else self.health.state(time.time() if now is None else now)

    @property
    def in_flight(self) -> int:
        """Attempts admitted and not yet ended (read by the `least-busy` strategy)."""
        return len(self._tickets)

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
            in_flight_elsewhere=self.elsewhere,
            rate_limit=self._rate_limit,
            budget_remaining=self.budget_remaining,
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

    # -- the loop: what awaits, in order -----------------------------------------------------
    async def on_start(self) -> None:
        if self._fresh:
            self._fresh = False
        else:
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

    async def handle(self, message: HealthChanged | Publish | Flush) -> Any:
        if type(message) is Publish:
            if self._unpublished:
                self._unpublished = False
                await self.state.save_health(self.name, self.health.record())
        elif type(message) is HealthChanged:
            # Another replica's view (pushed by the shared state): adopt it, no round trip.
            self._adopt(message.record)
            self._changed()
        elif type(message) is not Flush:
            raise TypeError(f"{self.name}: not a message of mine: {type(message).__name__}")
        return None

    def _publish(self) -> None:
        self._changed()
        self._unpublished = True
        self.tell_system(PUBLISH)

    # -- one attempt ---------------------------------------------------------------------------
    async def attempt(
        self, attempt: Attempt, *, admitted: Callable[[], object] | None = None
    ) -> AttemptResult | Admission:
        """Admit `attempt`, take its rate budget and run it, in the caller's task. A rejection
        is an `Admission`; otherwise the attempt's result, which this provider's health has
        taken into account once, however the attempt ended (cancellation included).
        `admitted` is called once the attempt has been admitted and is about to start."""
        ticket = self._admit(attempt)
        if type(ticket) is Admission:
            return ticket
        assert isinstance(ticket, int)
        result: AttemptResult | None = None
        hold = limits = None
        try:
            if self._rate_limit > 0:
                budget = await self.state.acquire_rate(self._rate_key, self._rate_limit)
                self._m.set_budget(budget.remaining)
                self.budget_remaining = budget.remaining
                if not budget.allowed:
                    self._m.rate_rejected.inc()
                    return Admission("rate_limited", retry_after=budget.retry_after)
            if self._limits is not None:
                limits = self._limits
                taken = await limits.take(attempt)
                if type(taken) is Admission:
                    await self._give_back_request()
                    return taken
                assert not isinstance(taken, Admission)
                hold = taken
            if admitted is not None:
                admitted()
            result = await self._call(attempt)
        except PoolFull:  # cannot happen while tickets bound connections; if it does, no blame
            return Admission("saturated", retry_after=1.0)
        else:
            return result
        finally:
            try:
                if hold is not None:  # its tokens settled, its stream lease released
                    assert limits is not None
                    limits.settle(hold, result)
            finally:
                try:
                    self._finish(ticket, result)
                except Exception as exc:  # noqa: BLE001 - as a tell's error: the actor crashes
                    self.crash(exc)

    async def _give_back_request(self) -> None:
        """Its tpm or streams refused an attempt its rpm had taken: the request goes back."""
        if self._rate_limit > 0:
            await self.state.acquire_units(self._rate_key, self._rate_limit, -1)

    def _admit(self, attempt: Attempt) -> int | Admission:
        """The synchronous step: take a ticket, or say why not."""
        health = self.health
        if self.down:
            return Admission("down", retry_after=DOWN_RETRY_AFTER)
        if not attempt.force:
            now = time.time()
            if now < health.blacklisted_until:
                return Admission("blacklisted", retry_after=health.blacklisted_until - now)
        probe = health.failures > 0
        if probe and health.probe_in_flight and not attempt.force:
            return Admission("half_open", retry_after=1.0)
        if len(self._tickets) >= self._max_attempts:
            return Admission("saturated", retry_after=1.0)
        ticket = next(self._ids)
        self._tickets[ticket] = _Ticket(health.epoch, probe, attempt.request_id)
        health.probe_in_flight |= probe
        return ticket

    async def _call(self, attempt: Attempt) -> AttemptResult:
        started = time.perf_counter()
        try:
            if tracing.ENABLED:
                result = await self._traced(attempt)
            else:
                result = await self._request(attempt, b"")
        except (ClientGone, PoolFull):
            raise
        except Exception as exc:
            log.exception("attempt_crashed", provider=self.name)
            result = AttemptResult(False, "bad_response", f"internal error: {type(exc).__name__}")
        # A cancelled attempt (no result) says nothing about upstream latency.
        latency = self._m.upstream_ok if result.ok else self._m.upstream_error
        latency.observe(time.perf_counter() - started)
        if result.first_byte is not None:
            self.latency.observe(result.first_byte, stream=attempt.stream)
        return result

    def _request(self, attempt: Attempt, traceparent: bytes) -> Coroutine[Any, Any, AttemptResult]:
        return run_attempt(
            self.upstream,
            attempt,
            loop=self._loop(),
            provider_timeout=self._provider_timeout,
            first_chunk_timeout=self._first_chunk_timeout,
            connect_timeout=self._connect_timeout,
            traceparent=traceparent,
        )

    def _traced(self, attempt: Attempt) -> Coroutine[Any, Any, AttemptResult]:
        """The attempt under its span, whose context goes upstream unless this provider says
        not. A request not recorded has no span: at most a header goes (no coroutine added)."""
        header = tracing.unrecorded(propagate=self.provider.propagate_trace)
        if header is not None:
            return self._request(attempt, header)
        return self._recorded(attempt)

    async def _recorded(self, attempt: Attempt) -> AttemptResult:
        span = tracing.attempt_span(
            provider=self.name,
            deployment=self.name,
            model=attempt.model,
            number=attempt.number,
            stream=attempt.stream,
            propagate=self.provider.propagate_trace,
            messages=attempt.request.messages,
        )
        try:
            result = await self._request(attempt, span.traceparent)
        except BaseException as exc:
            span.abandon(exc)
            raise
        usage, pricing = result.usage, self.pricing
        cost = None
        if usage is not None and pricing is not None:
            cost = usd(pricing.charge(self.name, attempt.model, usage).nanos)
        span.end(
            ok=result.ok,
            reason=result.reason,
            finish_reason=result.finish_reason,
            usage=usage,
            cost_usd=cost,
        )
        return result

    def _finish(self, ticket_id: int, result: AttemptResult | None) -> None:
        """The synchronous step at an attempt's end; `result` None: it was cancelled, refused
        its budget or the client left, which says nothing about the provider."""
        ticket = self._tickets.pop(ticket_id, None)
        if ticket is None:
            return
        health = self.health
        if ticket.probe:
            health.probe_in_flight = False
        if result is None:
            return
        if result.ok:
            self._m.success.inc()
            if self.window is not None:
                self.window.attempt(True, time.time())
            if ticket.epoch == health.epoch and health.succeed():
                log.info("provider_recovered", provider=self.name, request_id=ticket.request_id)
                self._publish()
            return
        if result.reason is None:
            return  # the client's request was wrong, not the provider
        self._m.failures[result.reason].inc()
        if self.window is not None:
            self.window.attempt(False, time.time())
        if result.cut_by_deadline or result.reason == "model_not_found":
            return  # the request ran out of time, or wants a model this provider lacks
        self._blacklist(ticket, result)

    def _blacklist(self, ticket: _Ticket, result: AttemptResult) -> None:
        health = self.health
        now = time.time()
        maximum = self.settings.backoff_max_seconds
        retry_after = result.retry_after
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
                self._publish()
            return
        assert result.reason is not None
        delay = health.fail(
            result.reason,
            now,
            base=self.settings.backoff_base_seconds,
            maximum=maximum,
            retry_after=retry_after,
        )
        log.warning(
            "provider_blacklisted",
            provider=self.name,
            request_id=ticket.request_id,
            reason=result.reason,
            failures=health.failures,
            seconds=round(delay, 3),
            detail=result.message,
        )
        self._publish()

    async def close(self, *, settle: float = 1.0) -> None:
        """Write what is still unwritten, then stop the loop. (Attempts run in their requests'
        tasks, which the router ends before it closes its providers.)"""
        if self.running:
            with contextlib.suppress(Exception):  # a loop too busy or crashed: stop anyway
                await self.ask(FLUSH, timeout=settle)
        if self._settling:  # bounded by the state's own timeouts
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.stop()
