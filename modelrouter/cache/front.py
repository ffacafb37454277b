"""The response cache in front of the router: look up, coalesce, route, store.

`ResponseCache.route` answers like `ActorSystem.route` (a relay of events) and is what that
calls when CACHE_MODE is on. Every request's relay first gets a `CacheStatus` event:

- `hit`: a stored answer, replayed as the same events; or an identical request's answer in
  flight, joined (late joiners get the events so far, then the rest live);
- `miss`: this request leads a flight to the upstream; its answer is stored when whole;
- `bypass`: not cacheable (CACHE_MODE, a request the router will refuse), `Cache-Control:
  no-cache` (not looked up, still stored unless `no-store`), or the store is away.

With Redis, the store is the fleet's, and so is coalescing: a replica that misses takes a
short lock (CACHE_LOCK_SECONDS, renewed while it leads) before going upstream; the others
poll for the answer within their own deadline, and route on their own once the lock is gone
without an answer (the leader failed, or died and its lease ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from modelrouter.actors.messages import Route
from modelrouter.actors.relay import ClientGone, Relay
from modelrouter.actors.router import Overloaded
from modelrouter.cache.codec import BadEntry, decode, encode, event_size
from modelrouter.cache.flight import Flight, Member, replay
from modelrouter.cache.key import Chain, cache_key, cacheable
from modelrouter.cache.memory import MemoryStore
from modelrouter.config import CacheSettings
from modelrouter.events import CacheResult, CacheStatus, Done, Event, Failed
from modelrouter.observability import Metrics
from modelrouter.schemas import ChatRequest

if TYPE_CHECKING:
    from redis.asyncio.lock import Lock

    from modelrouter.cache.redis_store import RedisStore

log = structlog.get_logger("modelrouter.cache")
STATUS: dict[CacheResult, CacheStatus] = {
    "hit": CacheStatus("hit"),
    "miss": CacheStatus("miss"),
    "bypass": CacheStatus("bypass"),
}
OVERLOADED = Failed(
    503, "overloaded", "the router is saturated; retry shortly", 1.0, retryable=True
)
WAITED_TOO_LONG = Failed(504, "timeout", "no answer within MAX_OPERATION_TIMEOUT")
# What a request that joined through `join` gets when the call it joined fails before
# answering: its caller routes it again (compared by identity), or fails with it.
ALONE = Failed(502, "upstream_error", "an identical request's upstream call failed", retryable=True)


class CachePolicy(msgspec.Struct, frozen=True):
    """What one request allows (from its `Cache-Control`, and `x-modelrouter-cache: off`)."""

    lookup: bool = True  # no-cache: False
    store: bool = True  # no-store: False


USE_CACHE = CachePolicy()


class ResponseCache:
    def __init__(
        self,
        settings: CacheSettings,
        metrics: Metrics,
        *,
        route: Callable[[Route], None],
        chain: Callable[[ChatRequest, tuple[str, ...]], Chain | None],
        remote: RedisStore | None = None,
        poll: float = 0.05,
        max_waiting: int = 10_000,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._route = route
        self._chain = chain
        self.remote = remote
        self.memory = (
            MemoryStore(metrics, max_bytes=settings.max_bytes, ttl=settings.ttl)
            if remote is None
            else None
        )
        self.poll = poll
        self.max_waiting = max_waiting
        self.flights: dict[str, Flight] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._count = metrics.cache_result

    @property
    def mode(self) -> str:
        if self.remote is None:
            return "memory"
        return "redis" if self.remote.available else "degraded"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.remote is not None:
            await self.remote.client.aclose()

    # -- routing -------------------------------------------------------------------------------
    def route(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        request_id: str,
        deadline: float,
        relay_size: int,
        policy: CachePolicy,
        loop: asyncio.AbstractEventLoop | None,
        allow: tuple[str, ...] = (),
        scope: str = "",
    ) -> Relay:
        relay = Relay(maxsize=relay_size, eager=stream, loop=loop)
        member = Member(relay, request, request_id, deadline, allow)
        key = self._key(request, stream, policy, allow, scope)
        if key is None:
            self._tell(member, "bypass")
            self._route(Route(request, relay, deadline, stream, request_id, allow))
            return relay
        source = self._source(key, deadline) if policy.lookup else None
        if source is not None:
            self._serve(member, source)
            return relay
        flight = self._flight(key, stream, deadline, store=policy.store)
        member.leader = True
        flight.join(member)
        if not policy.lookup:
            self._tell(member, "bypass")
        elif self.remote is None:
            self.flights[key] = flight
            self._tell(member, "miss")
        else:
            self.flights[key] = flight
            self._spawn(flight, self._fleet(flight, member))
            return relay
        try:
            self._start(flight, member)
        except Overloaded:
            self._forget(flight)
            raise
        return relay

    def join(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        request_id: str,
        deadline: float,
        relay_size: int,
        policy: CachePolicy,
        loop: asyncio.AbstractEventLoop | None,
        allow: tuple[str, ...] = (),
        scope: str = "",
    ) -> Relay | None:
        """`request` answered without an upstream call of its own, as `route` would answer it:
        a stored answer, or an identical request's answer in flight, joined. None when it
        would lead (or bypass): then it is to be routed, and takes what an upstream call
        takes (a stream, its stream slot). If the call it joined fails before answering, the
        relay ends with `ALONE`, and the caller routes the request again."""
        if not policy.lookup or not (self.flights or self.memory):
            return None  # nothing stored, nothing in flight: spared the key
        key = self._key(request, stream, policy, allow, scope)
        source = None if key is None else self._source(key, deadline)
        if source is None:
            return None
        relay = Relay(maxsize=relay_size, eager=stream, loop=loop)
        member = Member(relay, request, request_id, deadline, allow)
        member.reroute = False  # its caller routes it again (ALONE), within a stream slot
        self._serve(member, source)
        return relay

    def _source(self, key: str, deadline: float) -> list[Event] | Flight | None:
        """What answers `key` without an upstream call: a stored answer, or an identical
        request's flight to join (if it ends by `deadline`)."""
        found = self.memory.get(key) if self.memory is not None else None
        if found is not None:
            return found
        flight = self.flights.get(key)
        if flight is not None and flight.joinable and flight.deadline <= deadline:
            return flight
        return None

    def _serve(self, member: Member, source: list[Event] | Flight) -> None:
        self._tell(member, "hit")
        if isinstance(source, Flight):
            self.metrics.cache_coalesced.inc()
            source.join(member)
        else:
            replay(member.relay, source)

    def _key(
        self,
        request: ChatRequest,
        stream: bool,
        policy: CachePolicy,
        allow: tuple[str, ...],
        scope: str,
    ) -> str | None:
        """The request's key, or None when it bypasses the cache. `scope` (CACHE_SCOPE: the
        key's id, its team, or nothing) keeps one tenant's answers from another's."""
        if not (policy.lookup or policy.store) or not cacheable(request, self.settings.mode):
            return None
        if self.remote is not None and (
            not self.remote.available or len(self.tasks) >= self.max_waiting
        ):
            return None
        chain = self._chain(request, allow)
        if chain is None:  # the router refuses it: let it say why
            return None
        return cache_key(
            request, chain, stream=stream, with_user=self.settings.key_user, scope=scope
        )

    def _flight(self, key: str, stream: bool, deadline: float, *, store: bool) -> Flight:
        return Flight(
            key,
            stream=stream,
            deadline=deadline,
            limit=self.settings.max_value_bytes,
            store=store,
            on_end=self._ended,
            reroute=self._alone,
        )

    def _start(self, flight: Flight, member: Member) -> None:
        self._route(
            Route(
                member.request,
                flight,
                flight.deadline,
                flight.stream,
                member.request_id,
                member.allow,
            )
        )

    def _tell(self, member: Member, result: CacheResult) -> None:
        self._count[result].inc()
        with contextlib.suppress(ClientGone):  # that client is gone; the others are served
            member.relay.announce(STATUS[result])

    def _alone(self, flight: Flight, member: Member) -> None:
        """The leader failed before answering: this member is routed on its own (by its
        caller, if it joined through `join`)."""
        relay = member.relay
        if not member.reroute:
            relay.finish(ALONE)
            return
        try:
            relay.announce(STATUS["miss"])
            self._route(
                Route(
                    member.request,
                    relay,
                    member.deadline,
                    flight.stream,
                    member.request_id,
                    member.allow,
                )
            )
        except ClientGone:
            return
        except Overloaded:
            relay.finish(OVERLOADED)

    def _forget(self, flight: Flight) -> None:
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]

    def _ended(self, flight: Flight, event: Done | Failed) -> None:
        self._forget(flight)
        answer = flight.answer(event)
        if self.memory is not None:
            if answer is not None:
                self.memory.put(flight.key, answer, sum(event_size(e) for e in answer))
        elif answer is not None or flight.lock is not None:
            self._spawn(None, self._publish(flight.key, answer, flight.lock))

    def _spawn(self, flight: Flight | None, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if flight is not None:
            flight.on_close(task.cancel)  # every member gone: stop waiting

    # -- the fleet (Redis) ---------------------------------------------------------------------
    async def _fleet(self, flight: Flight, first: Member) -> None:
        """Find the answer in Redis, or lead (the lock), or wait for the replica that leads."""
        remote = self.remote
        assert remote is not None
        loop = asyncio.get_running_loop()
        try:
            while not flight.finished:
                seen = await remote.peek(flight.key)
                if seen is None:  # Redis failed: served without the cache
                    flight.store = False
                    self._tell(first, "bypass")
                    self._start(flight, first)
                    return
                value, locked = seen
                if value is not None and self._replay(flight, first, value):
                    return
                if not locked:
                    lock = remote.lock(flight.key)
                    if await remote.acquire(lock):
                        flight.lock = lock
                        self._tell(first, "miss")
                        self._start(flight, first)
                        await self._keep(flight, lock)
                        return
                if loop.time() + self.poll >= flight.deadline:
                    flight.finish(WAITED_TOO_LONG)
                    return
                await asyncio.sleep(self.poll)
        except Overloaded:
            flight.finish(OVERLOADED)
        except asyncio.CancelledError:
            self._forget(flight)  # every member left while it waited
            raise

    def _replay(self, flight: Flight, first: Member, value: str) -> bool:
        try:
            events: list[Event] = decode(value)
        except BadEntry as exc:
            log.warning("cache_entry_unreadable", error=str(exc))
            return False
        self._tell(first, "hit")
        flight.replay(events)
        return True

    async def _keep(self, flight: Flight, lock: Lock) -> None:
        """Renew the lock's lease while this replica leads."""
        assert self.remote is not None
        every = self.settings.lock_seconds / 3
        while not flight.finished:
            await asyncio.sleep(every)
            if not flight.finished:
                await self.remote.renew(lock)

    async def _publish(self, key: str, answer: list[Event] | None, lock: object | None) -> None:
        """Store the answer (if whole and small enough), then let the waiters go."""
        assert self.remote is not None
        if answer is not None:
            value = encode(answer)
            if len(value) <= self.settings.max_value_bytes:
                await self.remote.put(key, value)
        if lock is not None:
            await self.remote.release(lock)  # type: ignore[arg-type]
