"""The hedged walk of one streamed request: a second attempt before the first byte.

The walk is `Fallback`'s, except that its first attempt runs as a race: if it has produced no
first byte (text or a tool-call delta) after the hedge delay, the next candidate starts too.
Until one of them produces a byte, each writes into its own `Lane` (a relay that holds what it
is given); the first byte claims the request's relay for its lane, which hands on what it held
and from then on writes straight through, and the other attempt's task is cancelled (its
`finally` blocks close its connection and give back its ticket). A hedge is sent at most once
per request, never after a first byte, and only within the share of extra traffic the
policy's budget allows. Attempts that fail before any byte are judged as in any walk; when
both fail, the walk goes on with the candidates left.

The walk without hedging is untouched: the router builds this one only for requests that may
hedge (routing/hedging.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog

from modelrouter.actors.fallback import Fallback
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, Route
from modelrouter.actors.relay import ClientGone, Relay, RelayFinished
from modelrouter.events import (
    Answering,
    CacheStatus,
    Chunk,
    Done,
    Event,
    Failed,
    ToolCallDelta,
    Usage,
)
from modelrouter.observability import Metrics
from modelrouter.routing import Candidate
from modelrouter.routing.hedging import HINTS, HedgeOutcome, Hedging

log = structlog.get_logger("modelrouter.router")


class Race:
    """The lanes of one request's race and the relay the winner writes."""

    __slots__ = ("decided", "lanes", "loop", "on_claim", "target", "winner")

    def __init__(
        self,
        target: Relay,
        loop: asyncio.AbstractEventLoop,
        on_claim: Callable[[Race, Lane], None],
    ) -> None:
        self.target = target
        self.loop = loop
        self.on_claim = on_claim
        self.lanes: list[Lane] = []
        self.winner: Lane | None = None
        self.decided: asyncio.Future[None] = loop.create_future()

    def claim(self, lane: Lane) -> None:
        """`lane` produced the first byte (or ended well without any): it answers; the others
        are cancelled now, before they can write anything."""
        self.winner = lane
        self.decided.set_result(None)
        self.on_claim(self, lane)
        for other in self.lanes:
            if other is not lane and other.task is not None:
                other.task.cancel()
        target = self.target
        for event in lane.held:
            if type(event) is Answering:
                target.announce(event)
            elif not target.offer(event):  # pragma: no cover - nothing was relayed yet
                raise RelayFinished("a race's relay was full before its first byte")
        lane.held.clear()


class Lane(Relay):
    """One attempt's relay while its request races: it holds what it is given until its
    attempt wins (or the race ends), then writes through to the request's relay."""

    __slots__ = ("candidate", "held", "race", "started", "task", "usage")

    def __init__(self, race: Race, candidate: Candidate) -> None:
        super().__init__(maxsize=1, loop=race.loop)
        self.race = race
        self.candidate = candidate
        self.held: list[Event] = []
        self.task: asyncio.Task[AttemptResult | Admission] | None = None
        self.started = race.loop.time()
        self.usage: Usage | None = None  # what its upstream counted when it was cancelled

    def cancelled_with(self, usage: Usage | None) -> None:
        self.usage = usage

    def offer(self, event: Event) -> bool:
        race = self.race
        if race.winner is self:
            return race.target.offer(event)
        kind = type(event)
        if kind is Chunk or kind is ToolCallDelta:
            if race.winner is not None:
                raise ClientGone  # the other attempt answers: this one stops here
            race.claim(self)
            return race.target.offer(event)
        self.held.append(event)  # usage of an answer without text: bounded by the attempt
        return True

    async def put(self, event: Event) -> None:
        if self.race.winner is self:
            await self.race.target.put(event)
        else:
            self.offer(event)

    def announce(self, event: Answering | CacheStatus) -> None:
        if self.race.winner is self:
            self.race.target.announce(event)
        else:
            self.held.append(event)

    @property
    def closed(self) -> bool:
        return self.race.target.closed


class HedgedFallback(Fallback):
    def __init__(
        self,
        route: Route,
        candidates: list[Candidate],
        *,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        redact: Callable[[str], str],
        hedging: Hedging,
    ) -> None:
        super().__init__(route, candidates, loop=loop, metrics=metrics, redact=redact)
        self.hedging = hedging
        self.hedge_decided = False  # a hedge was sent, or refused by the cap: no other

    async def run(self) -> Done | Failed:
        self.hedging.budget.request()
        candidates = self.candidates
        used: set[int] = set()
        for index, candidate in enumerate(candidates):
            if index in used:
                continue
            used.add(index)
            partner = None if self.hedge_decided else self._partner(index, used)
            if partner is None:
                ended = await self._try(candidate, force=False)
            else:
                ended = await self._race(candidate, candidates[partner], partial(used.add, partner))
            if ended is not None:
                return ended
        return await self._last_resort()

    def _partner(self, index: int, used: set[int]) -> int | None:
        """The candidate a hedge of candidate `index` would go to: the next one not tried,
        on another deployment."""
        candidates = self.candidates
        actor = candidates[index].actor
        for j in range(index + 1, len(candidates)):
            if j not in used and candidates[j].actor is not actor:
                return j
        return None

    def _lane(self, race: Race, candidate: Candidate) -> Lane:
        """Start `candidate`'s attempt in its own task, writing into a new lane of `race`."""
        route = self.route
        lane = Lane(race, candidate)
        attempt = Attempt(
            route.request,
            candidate.model,
            lane,
            route.stream,
            route.deadline,
            route.request_id,
            self.attempts + 1,
            False,
        )
        actor = candidate.actor
        lane.task = self.loop.create_task(
            actor.attempt(attempt, admitted=partial(self._admitted, actor.name))
        )
        race.lanes.append(lane)
        return lane

    async def _race(
        self, first: Candidate, second: Candidate, take_second: Callable[[], object]
    ) -> Done | Failed | None:
        """`first`'s attempt, and `second`'s beside it if `first` has no byte by the delay."""
        if self.loop.time() >= self.route.deadline:
            return Failed(504, "timeout", "the request deadline passed before an answer")
        race = Race(self.route.relay, self.loop, self._claimed)
        pending = [self._lane(race, first)]
        hedge_at: float | None = self.loop.time() + self.hedging.delay(first.actor.name)
        try:
            while True:
                for lane in [lane for lane in pending if lane.task and lane.task.done()]:
                    pending.remove(lane)
                    ended = self._settle(race, lane)
                    if ended is not None:
                        return ended
                if not pending:
                    return None
                timeout = None
                if hedge_at is not None and race.winner is None:
                    timeout = hedge_at - self.loop.time()
                    if timeout <= 0:
                        hedge_at = timeout = None
                        if self._hedge_allowed(second):
                            take_second()
                            pending.append(self._lane(race, second))
                        continue
                waiting: set[asyncio.Future[Any]] = {lane.task for lane in pending if lane.task}
                if race.winner is None:
                    waiting.add(race.decided)
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if race.winner is not None:
                    hedge_at = None
        finally:
            await self._end(race)

    def _hedge_allowed(self, second: Candidate) -> bool:
        """A hedge now, if the budget has room (counted, and said why not otherwise)."""
        self.hedge_decided = True
        if not self.hedging.budget.allow():
            self._outcome("skipped_cap")
            log.info("hedge_skipped", reason="cap", provider=second.actor.name)
            return False
        log.info("hedge_sent", provider=second.actor.name)
        return True

    def _settle(self, race: Race, lane: Lane) -> Done | Failed | None:
        """A lane's attempt ended: its verdict ends the walk, None goes on waiting (or on)."""
        task = lane.task
        assert task is not None
        if task.cancelled():
            return None
        error = task.exception()
        if error is not None:
            if isinstance(error, ClientGone) and race.winner not in (None, lane):
                return None  # it lost the race as it was writing
            raise error
        if race.winner is not None and race.winner is not lane:
            return None  # it ended before its cancellation reached it: the winner answers
        result = task.result()
        if type(result) is Admission:
            self.rejections.append((lane.candidate, result))
            return None
        assert isinstance(result, AttemptResult)
        if result.ok and race.winner is None:
            race.claim(lane)  # an answer without any text or tool call: it still answers
        return self._judge(lane.candidate.actor.name, result)

    def _claimed(self, race: Race, winner: Lane) -> None:
        """The first byte (synchronously, before any other lane can write): sample the
        winner's time to it; with a hedge out, count the outcome and note the loser."""
        now = self.loop.time()
        self.hedging.observe(winner.candidate.actor.name, now - winner.started)
        if len(race.lanes) < 2:
            return
        first, second = race.lanes[0], race.lanes[1]
        self._outcome("lost" if winner is first else "won")
        loser = second if winner is first else first
        if loser.task is not None and not loser.task.done():  # still waiting: cancelled now
            hints = HINTS.get()
            if hints is not None:
                hints.loser = (loser.candidate.actor.name, loser.candidate.model)
            # Its wait is a lower bound of its time to first byte: worth a sample too.
            self.hedging.observe(loser.candidate.actor.name, now - loser.started)

    def _outcome(self, outcome: HedgeOutcome) -> None:
        self.hedging.count(outcome)
        self.metrics.count_hedge(outcome)
        hints = HINTS.get()
        if hints is not None:
            hints.outcome = outcome

    async def _end(self, race: Race) -> None:
        """Whatever ended the race (an answer, a verdict, the client leaving), no lane's task
        outlives it: each is cancelled and awaited, so its `finally` blocks have run."""
        tasks = [lane.task for lane in race.lanes if lane.task is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hints = HINTS.get()
        if hints is not None and hints.loser is not None:
            # The loser's usage, if its upstream counted any before it was cancelled (an
            # Anthropic stream says its prompt tokens first): billed as given, not estimated.
            lost = [lane for lane in race.lanes if lane is not race.winner]
            hints.loser_usage = next((lane.usage for lane in lost if lane.usage), None)
