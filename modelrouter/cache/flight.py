"""Coalescing: one answer in flight, shared by every identical request that arrives meanwhile.

A `Flight` is the writer end the router writes one answer into, in place of a client's relay.
Each member (the request that started it, and each that joined) keeps its own relay and a
cursor into the flight's log of events. The writer waits for the slowest member, as it waits
for a single client without coalescing. A member that joins late gets the events so far at
once, then the rest live. A member that leaves (its client gone) leaves the others be; the
upstream call stops only when the last one leaves.

At the end, `Done` (and whatever a member has not had yet) goes to every member. A failure
before any of the answer was relayed goes to the member that led, and every other member is
routed on its own; a failure after that (a cut stream) goes to all. A client error (4xx but
408 and 429) is the request's own fault: it would only repeat, so it goes to all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from modelrouter.actors.relay import ClientGone, Relay, RelayFinished
from modelrouter.cache.codec import event_size
from modelrouter.events import Answering, CacheStatus, Chunk, Done, Event, Failed, ToolCallDelta
from modelrouter.schemas import ChatRequest


class Member:
    """One request served by a flight: its relay, and what to route if it must go alone."""

    __slots__ = (
        "allow",
        "cursor",
        "deadline",
        "leader",
        "relay",
        "request",
        "request_id",
        "reroute",
    )

    def __init__(
        self,
        relay: Relay,
        request: ChatRequest,
        request_id: str,
        deadline: float,
        allow: tuple[str, ...] = (),
    ) -> None:
        self.allow = allow  # its key's model allow-list, for its own route
        self.relay = relay
        self.request = request
        self.request_id = request_id
        self.deadline = deadline
        self.leader = False
        self.cursor = 0  # index into the flight's log of the next event this member gets
        # Routed on its own by the cache if the call fails before answering; False: its caller
        # does that (it must first take what an upstream call takes, a stream its slot).
        self.reroute = True


def shared_failure(event: Failed) -> bool:
    """A failure every identical request would meet too (the request itself is wrong)."""
    return 400 <= event.status < 500 and event.status not in (408, 429)


def replay(relay: Relay, events: list[Event]) -> None:
    """A stored answer into a fresh relay, at once: no task, no wait (the relay is given
    room for exactly these events, which the store holds anyway)."""
    relay.maxsize += len(events)
    for event in events[:-1]:
        if type(event) is Answering:
            relay.announce(event)
        else:
            relay.offer(event)
    relay.finish(events[-1])  # type: ignore[arg-type]


class Flight(Relay):
    __slots__ = (
        "_base",
        "_on_end",
        "_reroute",
        "complete",
        "deadline",
        "emitted",
        "key",
        "limit",
        "lock",
        "log",
        "members",
        "size",
        "store",
        "stream",
    )

    def __init__(
        self,
        key: str,
        *,
        stream: bool,
        deadline: float,
        limit: int,
        store: bool,
        on_end: Callable[[Flight, Done | Failed], None],
        reroute: Callable[[Flight, Member], None],
    ) -> None:
        super().__init__(maxsize=1, eager=True)
        self.key = key
        self.stream = stream
        self.deadline = deadline
        self.limit = limit  # bytes of answer kept whole (to store and to let late joiners in)
        self.store = store
        self._on_end = on_end
        self._reroute = reroute
        self.log: list[Event] = []
        self._base = 0  # events dropped from the log's front (only once it is not complete)
        self.members: list[Member] = []
        self.size = 0
        self.complete = True  # the log holds the whole answer so far
        self.emitted = False  # text or a tool call was relayed: no member may go alone now
        self.lock: object | None = None  # the fleet-wide leader's lock, when held

    @property
    def joinable(self) -> bool:
        return self.complete and not self._closed and not self._finished

    @property
    def finished(self) -> bool:
        return self._finished

    # -- members -------------------------------------------------------------------------------
    def join(self, member: Member) -> None:
        self.members.append(member)
        member.cursor = self._base
        member.relay.maxsize += len(self.log)  # room for every event so far, delivered now
        member.relay.on_close(partial(self._leave, member))
        self._push(member)

    def _leave(self, member: Member) -> None:
        if member in self.members:
            self.members.remove(member)
            if not self.members and not self._finished:
                self.close()  # the last one gone: stop the upstream call

    def _push(self, member: Member) -> bool:
        """Deliver what `member` has not had yet; False when its relay is full."""
        relay, log, base = member.relay, self.log, self._base
        try:
            while member.cursor - base < len(log):
                event = log[member.cursor - base]
                if type(event) is Answering:
                    relay.announce(event)
                elif not relay.offer(event):
                    return False
                member.cursor += 1
        except ClientGone:
            self._leave(member)
        return True

    def _lagging(self) -> Member | None:
        end = self._base + len(self.log)
        for member in list(self.members):
            if member.cursor < end and not self._push(member):
                return member
        return None

    # -- the writer's side (what the router and the upstream job call) --------------------------
    def offer(self, event: Event) -> bool:
        if self._closed:
            raise ClientGone
        if self._lagging() is not None:
            return False
        self._append(event)
        for member in list(self.members):
            self._push(member)
        if not self.complete:
            self._trim()
        return True

    async def put(self, event: Event) -> None:
        """Queue `event` once every member has room: the slowest member sets the pace."""
        while not self.offer(event):
            member = self._lagging()
            if member is None:
                continue
            try:
                await member.relay.put(self.log[member.cursor - self._base])
            except ClientGone:
                self._leave(member)
            else:
                member.cursor += 1

    def announce(self, event: Answering | CacheStatus) -> None:
        if self._closed:
            raise ClientGone
        self._append(event)
        for member in list(self.members):
            self._push(member)

    def finish(self, event: Done | Failed) -> None:
        if self._finished:
            raise RelayFinished(f"flight already ended; {type(event).__name__} is a second end")
        self._finished = True
        alone = type(event) is Failed and not self.emitted and not shared_failure(event)
        for member in list(self.members):
            if alone and not member.leader:
                self._reroute(self, member)
            else:
                self._end(member, event)
        self._on_end(self, event)

    def replay(self, events: list[Event]) -> None:
        """Serve every member a stored answer (found while this flight waited)."""
        self.store = False
        for event in events[:-1]:
            self._append(event)
        self.finish(events[-1])  # type: ignore[arg-type]

    def _end(self, member: Member, event: Done | Failed) -> None:
        relay = member.relay
        relay.maxsize += self._base + len(self.log) - member.cursor  # the rest, at once
        self._push(member)
        relay.finish(event)

    def _append(self, event: Event) -> None:
        self.log.append(event)
        kind = type(event)
        if kind is Chunk or kind is ToolCallDelta:
            self.emitted = True
        if self.complete:
            self.size += event_size(event)
            if self.size > self.limit:
                self.complete = False  # too large to store or to join: kept only until read

    def _trim(self) -> None:
        if not self.members:
            return
        low = min(member.cursor for member in self.members)
        if low - self._base >= 64:
            del self.log[: low - self._base]
            self._base = low

    # -- the answer ----------------------------------------------------------------------------
    def answer(self, event: Done | Failed) -> list[Event] | None:
        """The events to store: the answering provider, its answer, `Done`; None when this is
        not a whole answer to keep (an error, a refusal, too large, not to be stored)."""
        if not (self.store and self.complete and type(event) is Done):
            return None
        if event.finish_reason == "content_filter":
            return None
        start = max((i for i, e in enumerate(self.log) if type(e) is Answering), default=None)
        if start is None:
            return None
        return [*self.log[start:], event]
