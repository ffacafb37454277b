"""Answering a parsed request, shared by both API families: routed through the actor system,
then gathered whole (`/chat`, `/v1` without `stream`) or relayed as a stream (`/stream`, `/v1`
with `stream`). Only the request parsing and the output format differ between the families.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from modelrouter.actors.relay import Relay
from modelrouter.actors.system import (
    ALONE,
    USE_CACHE,
    Overloaded,
    StreamSlot,
    TooManyStreams,
)
from modelrouter.deadline import Deadline
from modelrouter.errors import ApiError
from modelrouter.events import (
    Answering,
    CacheStatus,
    Chunk,
    Continued,
    Done,
    Event,
    Failed,
    Thinking,
    ToolCallDelta,
    Usage,
)
from modelrouter.routing.hedging import HINTS, Hints, header_choice
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.cost import FREE, Charge, estimated_usage, usd_text
from modelrouter.tenants.holds import Hold
from modelrouter.tenants.identity import cache_scope
from modelrouter.web.budget import REMAINING_HEADER, remaining_header
from modelrouter.web.caching import HEADER as CACHE_HEADER
from modelrouter.web.caching import cache_policy
from modelrouter.web.errors import from_event
from modelrouter.web.keylimits import (
    admit_rest,
    count_refusal,
    model_allow,
    release_holds,
    take_key,
)
from modelrouter.web.runtime import REQUEST_ID, SUMMARY, Runtime, Summary
from modelrouter.web.sse import HEADERS, StreamFormat

RELAY_SIZE = 64
DEADLINE_GRACE = 1.0  # the router answers by the deadline; this only guards against a bug
NOBODY = Answering("", "", 0)  # no attempt started (the request failed before any)
COST_HEADER = "x-modelrouter-cost-usd"
HEDGE_HEADER = "x-modelrouter-hedge"
CONTINUE_HEADER = "x-modelrouter-continue"


class Answer(msgspec.Struct):
    """A whole answer gathered from the relay."""

    text: str
    tool_calls: list[ToolCallDelta]
    usage: Usage
    finish_reason: str
    answering: Answering
    thinking: list[Thinking] = []  # an Anthropic deployment's (only /v1/messages shows them)


def deadline_of(runtime: Runtime) -> float:
    """The request's one deadline (loop time): every attempt's windows are cut to it."""
    return runtime.loop.time() + runtime.settings.max_operation_timeout


def route(
    request: web.Request, runtime: Runtime, chat: ChatRequest, *, stream: bool, deadline: float
) -> Relay:
    summary = request[SUMMARY]
    if runtime.capture:  # the history keeps what was asked
        summary.chat = chat
    if runtime.hints and stream:
        _note_hints(request)
    identity = summary.identity
    try:
        return runtime.system.route(
            chat,
            stream=stream,
            request_id=request[REQUEST_ID],
            deadline=deadline,
            relay_size=RELAY_SIZE,
            cache=cache_policy(request) if runtime.cache else USE_CACHE,
            allow=() if identity is None or identity.key is None else identity.key.models,
            scope=cache_scope(identity, runtime.cache_scope) if runtime.cache else "",
        )
    except Overloaded:
        raise ApiError(
            503, "overloaded", "the router is saturated; retry shortly", retry_after=1.0
        ) from None


def _note_hints(request: web.Request) -> None:
    """What the stream asks of routing (its hedge and continue headers), in the context its
    routing task copies, and in its summary for what routing did."""
    headers = request.headers
    hints = Hints(
        header_choice(headers.get(HEDGE_HEADER)), header_choice(headers.get(CONTINUE_HEADER))
    )
    HINTS.set(hints)  # set for every stream: a keep-alive connection's next one starts anew
    request[SUMMARY].hints = hints


# One flat loop over the event kinds: no nested coroutine per request on the hot path.
async def whole_answer(  # noqa: PLR0912
    request: web.Request, runtime: Runtime, chat: ChatRequest
) -> Answer:
    """Wait for the whole answer (or raise its failure), within the key's limits; the relay is
    closed and a virtual key's hold settled either way.

    No timer here: the routing task answers by the request's deadline (each attempt is cut to
    it), and ends the relay however it ends itself."""
    summary = request[SUMMARY]
    key = None if summary.identity is None else summary.identity.key
    hold = None
    if key is not None:  # a virtual key: its meter's hold, with no coroutine if it can
        hold = take_key(runtime, summary, key, chat, stream=False)
        if hold is None or hold.waits:
            hold = await admit_rest(runtime, summary, key, chat, hold, stream=False)
    relay = None
    parts: list[str] = []
    calls: list[ToolCallDelta] = []
    thinking: list[Thinking] = []
    usage = Usage()
    try:
        relay = route(request, runtime, chat, stream=False, deadline=deadline_of(runtime))
        while True:
            for event in await relay.take():
                kind = type(event)
                if kind is Chunk:
                    parts.append(event.text)  # type: ignore[union-attr]
                elif kind is ToolCallDelta:
                    calls.append(event)  # type: ignore[arg-type]
                elif kind is Answering:
                    summary.answering = event  # type: ignore[assignment]
                elif kind is Usage:
                    usage = summary.usage = event  # type: ignore[assignment]
                elif kind is Failed:
                    raise from_event(event)  # type: ignore[arg-type]
                elif kind is Done:
                    reason = event.finish_reason or "stop"  # type: ignore[union-attr]
                    answering = summary.answering or NOBODY
                    summary.cost = charge(runtime, summary, answering, usage)
                    if runtime.capture:
                        summary.text = parts
                    return Answer("".join(parts), calls, usage, reason, answering, thinking)
                elif kind is CacheStatus:
                    summary.cache = event.result  # type: ignore[union-attr]
                elif kind is Thinking:
                    thinking.append(event)  # type: ignore[arg-type]
    except ApiError as exc:
        count_refusal(runtime, exc)
        raise
    finally:
        if relay is not None:
            relay.close()
        release_holds(runtime, summary, hold)


async def serve_stream(
    request: web.Request, runtime: Runtime, chat: ChatRequest, fmt: StreamFormat
) -> web.StreamResponse:
    """Route `chat` as a stream written in `fmt`, within the key's limits (a virtual key's hold
    is settled however it ends). MAX_CONCURRENT_STREAMS bounds the streams that call
    upstream: one the cache answers (a stored answer, or an identical request's in flight,
    joined) takes no slot, unless the call it joined fails and it goes on its own."""
    summary = request[SUMMARY]
    key = None if summary.identity is None else summary.identity.key
    hold = None
    if key is not None:  # a virtual key: its meter's hold, with no coroutine if it can
        hold = take_key(runtime, summary, key, chat, stream=True)
        if hold is None or hold.waits:
            hold = await admit_rest(runtime, summary, key, chat, hold, stream=True)
    deadline = deadline_of(runtime)
    slot = runtime.system.stream_slot()
    ending = _Ending(runtime, summary, chat, hold, slot)
    relay: Relay | None = None
    if runtime.capture:
        fmt = Capturing(fmt, summary)
    try:
        relay = _join(request, runtime, chat, deadline)
        if relay is not None:
            try:
                return await _relay_stream(
                    request, runtime, relay, fmt, chat=chat, deadline=deadline, ending=ending
                )
            except GoneAlone:  # the call it joined failed before answering
                relay.close()
                relay = _join(request, runtime, chat, deadline)  # another may have started
        if relay is None:
            relay = await _lead(request, runtime, chat, deadline, slot)
        try:
            return await _relay_stream(
                request, runtime, relay, fmt, chat=chat, deadline=deadline, ending=ending
            )
        except GoneAlone:  # the second call it joined failed too: the client hears it
            raise from_event(ALONE) from None
    except ApiError as exc:
        count_refusal(runtime, exc)
        raise
    finally:
        if relay is not None:
            relay.close()
        await ending()  # a no-op when the stream's end already gave everything back


class _Ending:
    """What a stream gives back when it ends: its key's hold, its budget's hold and its
    stream slot. Called before the stream's last bytes are written (a client told that the
    stream is over may start the next one at once, on this replica or another, and must find
    its slot and limits free), and again, then a no-op, in `serve_stream`'s `finally`."""

    __slots__ = ("chat", "hold", "runtime", "slot", "summary")

    def __init__(
        self,
        runtime: Runtime,
        summary: Summary,
        chat: ChatRequest,
        hold: Hold | None,
        slot: StreamSlot,
    ) -> None:
        self.runtime = runtime
        self.summary = summary
        self.chat = chat
        self.hold = hold
        self.slot = slot

    async def __call__(self) -> None:
        runtime, summary = self.runtime, self.summary
        if summary.cost is None and summary.first_byte is not None:
            # Started, then abandoned by the client or cut by the deadline's guard.
            summary.cost = stream_charge(runtime, summary, self.chat, complete=False)
        hold, self.hold = self.hold, None
        release_holds(runtime, summary, hold)  # its usage and cost are known (or estimated)
        await self.slot.release()


def _join(
    request: web.Request, runtime: Runtime, chat: ChatRequest, deadline: float
) -> Relay | None:
    """The stream answered by the cache alone, or None (the cache off, or it would lead)."""
    if not runtime.cache:
        return None
    identity = request[SUMMARY].identity
    relay = runtime.system.join(
        chat,
        stream=True,
        request_id=request[REQUEST_ID],
        deadline=deadline,
        relay_size=RELAY_SIZE,
        cache=cache_policy(request),
        allow=model_allow(identity),
        scope=cache_scope(identity, runtime.cache_scope),
    )
    if relay is not None and runtime.capture:
        request[SUMMARY].chat = chat
    return relay


async def _lead(
    request: web.Request, runtime: Runtime, chat: ChatRequest, deadline: float, slot: StreamSlot
) -> Relay:
    """Route the stream within a slot. Refused one, it may still join: an identical request
    may have started its call while this one asked for a slot (a shared state's wait)."""
    try:
        await slot.acquire()
    except TooManyStreams:
        relay = _join(request, runtime, chat, deadline)
        if relay is None:
            raise ApiError(
                429,
                "too_many_streams",
                "MAX_CONCURRENT_STREAMS reached; retry shortly",
                retry_after=1.0,
            ) from None
        return relay
    return route(request, runtime, chat, stream=True, deadline=deadline)


class GoneAlone(Exception):
    """A joined stream's call failed before answering: the request is to be routed again."""


async def _first_events(request: web.Request, relay: Relay) -> list[Event]:
    """The events up to the answer's first (its provider noted), or its failure as an error:
    nothing is sent before something to send, so a fallback stays invisible."""
    summary = request[SUMMARY]
    while True:
        events = await relay.take()
        while events:
            kind = type(events[0])
            if kind is Answering:
                summary.answering = events.pop(0)  # type: ignore[assignment]
            elif kind is CacheStatus:
                summary.cache = events.pop(0).result  # type: ignore[union-attr]
            else:
                break
        if events:
            first = events[0]
            if first is ALONE:
                raise GoneAlone
            if isinstance(first, Failed):
                raise from_event(first)
            return events


async def _relay_stream(
    request: web.Request,
    runtime: Runtime,
    relay: Relay,
    fmt: StreamFormat,
    *,
    chat: ChatRequest,
    deadline: float,
    ending: _Ending,
) -> web.StreamResponse:
    summary = request[SUMMARY]
    response = web.StreamResponse(headers=HEADERS)
    relayed = 0  # characters of text sent: a stream cut before its usage is billed from them
    # One guard for the whole stream, a grace past the request's deadline by which the router
    # ends it: it fires only if the router failed to (a bug), not a timer per batch of chunks.
    try:
        with Deadline(runtime.loop, deadline + DEADLINE_GRACE):
            events = await _first_events(request, relay)
            answering = summary.answering or NOBODY
            await _start_stream(request, runtime, response, answering)
            head = fmt.start(answering)
            while True:
                out: list[bytes] = [head] if head else []
                head = b""
                for event in events:
                    kind = type(event)
                    if kind is Chunk:
                        relayed += len(event.text)  # type: ignore[union-attr]
                    elif kind is Usage:
                        summary.usage = event  # type: ignore[assignment]
                    elif kind is Continued:
                        out.append(_continued(summary, event))  # type: ignore[arg-type]
                        continue
                    elif kind is Done or kind is Failed:
                        if kind is Failed:
                            summary.error = event.type  # type: ignore[union-attr]
                        summary.relayed = relayed
                        # Before the end is written: the final usage chunk carries the cost.
                        summary.cost = stream_charge(runtime, summary, chat, complete=kind is Done)
                        await ending()  # before the client hears the end (see _Ending)
                        out.append(fmt.event(event))
                        await response.write(b"".join(out))
                        await response.write_eof()
                        return response
                    out.append(fmt.event(event))
                data = b"".join(out)
                if data:
                    await response.write(data)
                events = await relay.take()
    except TimeoutError:
        if not response.prepared:
            raise ApiError(504, "timeout", "no answer within MAX_OPERATION_TIMEOUT") from None
        summary.error = "timeout"
        await response.write(fmt.event(Failed(504, "timeout", "stream deadline passed")))
        return response
    finally:
        summary.relayed = relayed


def _continued(summary: Summary, event: Continued) -> bytes:
    """The switch to a continuation: its deployment answers from here on (its usage and price
    are the request's), and the client is told in an SSE comment line, which it ignores."""
    summary.answering = Answering(event.to_provider, event.model, event.attempt)
    return f": continued from {event.from_provider} by {event.to_provider}\n\n".encode()


async def _start_stream(
    request: web.Request, runtime: Runtime, response: web.StreamResponse, answering: Answering
) -> None:
    """Send the headers: from here on, failures end the stream instead of changing its status."""
    summary = request[SUMMARY]
    response.headers["x-modelrouter-provider"] = answering.provider
    response.headers["X-Request-ID"] = request[REQUEST_ID]
    if summary.cache is not None:
        response.headers[CACHE_HEADER] = summary.cache
    if summary.budget_left is not None or summary.admission is not None:
        response.headers[REMAINING_HEADER] = remaining_header(summary) or "0"
    await response.prepare(request)
    if answering.provider:  # once per request: the first chunk goes out now
        summary.first_byte = seconds = time.perf_counter() - summary.started
        if summary.cache != "hit":  # a replay says nothing of the provider's speed
            runtime.metrics.observe_first_chunk(answering.provider, seconds)


class Capturing:
    """A stream format that also keeps the answer's text, for the history (content on)."""

    __slots__ = ("fmt", "parts")

    def __init__(self, fmt: StreamFormat, summary: Summary) -> None:
        self.fmt = fmt
        self.parts = summary.text = []

    def start(self, answering: Answering) -> bytes:
        return self.fmt.start(answering)

    def event(self, event: Event) -> bytes:
        if type(event) is Chunk:
            self.parts.append(event.text)
        return self.fmt.event(event)


def response_headers(summary: Summary, answering: Answering) -> dict[str, str]:
    """A whole answer's own headers: who answered, what it cost, and what the cache did (when
    on). A stream's headers go before its usage is known: its cost is in its final usage."""
    headers = {"x-modelrouter-provider": answering.provider}
    if summary.cost is not None:
        headers[COST_HEADER] = usd_text(summary.cost.nanos)
    if summary.cache is not None:
        headers[CACHE_HEADER] = summary.cache
    left = summary.budget_left  # after the settle (`web.budget.remaining_header`)
    if left is not None:
        headers[REMAINING_HEADER] = usd_text(left if left > 0 else 0)
    return headers


def charge(runtime: Runtime, summary: Summary, answering: Answering, usage: Usage) -> Charge:
    """What the request costs: nothing from the cache, else its usage at its price."""
    if summary.cache == "hit":
        return FREE
    return runtime.pricing.charge(answering.provider, answering.model, usage)


def stream_charge(
    runtime: Runtime, summary: Summary, chat: ChatRequest, *, complete: bool
) -> Charge | None:
    """A stream's cost, from the usage its provider gave, else (or if the stream did not
    complete) estimated from its messages and the text relayed; None if no provider
    answered."""
    answering = summary.answering
    if answering is None or not answering.provider:
        return None
    if summary.cache == "hit":
        return FREE
    usage = summary.usage
    if usage is None or not complete:
        usage = summary.usage = estimated_usage(chat, summary.relayed, usage)
    charge = runtime.pricing.charge(answering.provider, answering.model, usage)
    hints = summary.hints
    if hints is not None and hints.loser is not None:
        charge = _with_loser(runtime, charge, chat, hints)
    return charge


def _with_loser(runtime: Runtime, charge: Charge, chat: ChatRequest, hints: Hints) -> Charge:
    """A hedged stream's cost includes its cancelled attempt: cancelled before its first
    byte, it read the prompt and wrote nothing: its usage when its upstream gave one, else
    its prompt estimated from the messages."""
    assert hints.loser is not None
    provider, model = hints.loser
    usage = hints.loser_usage
    if usage is None or not usage.prompt_tokens:
        usage = estimated_usage(chat, 0, None)
    extra = runtime.pricing.charge(provider, model, usage)
    return Charge(
        charge.nanos + extra.nanos,
        charge.priced and extra.priced,
        estimated=charge.estimated or extra.estimated,
    )
