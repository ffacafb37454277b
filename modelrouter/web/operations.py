"""Answering a request that is not a chat (embeddings, a token count): routed as a whole
answer is (`web.answers.route`), its events gathered until the end, within the same door as
a chat: a virtual key's limits (rpm, tpm) and budget, held before and settled after."""

from __future__ import annotations

from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.events import Answering, CacheStatus, Done, Event, Failed, Usage
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.cost import FREE
from modelrouter.web.answers import NOBODY, charge, deadline_of, route
from modelrouter.web.errors import from_event
from modelrouter.web.keylimits import admit_key, count_refusal, release_holds
from modelrouter.web.runtime import SUMMARY, Runtime


async def gather(  # noqa: PLR0912 - one flat loop, as whole_answer
    request: web.Request, runtime: Runtime, chat: ChatRequest, *, free: bool = False
) -> tuple[list[Event], Usage, Answering]:
    """The answer's events (its usage and who answered apart, noted on the summary), or its
    failure raised. The request's cost is noted before the key's holds are settled: its
    usage at its price, or nothing when `free` (a token count: it also gives back the tokens
    its tpm hold took). The relay is closed either way."""
    summary = request[SUMMARY]
    key = None if summary.identity is None else summary.identity.key
    hold = None if key is None else await admit_key(runtime, summary, key, chat, stream=False)
    relay = None
    found: list[Event] = []
    usage = Usage()
    try:
        relay = route(request, runtime, chat, stream=False, deadline=deadline_of(runtime))
        while True:
            for event in await relay.take():
                kind = type(event)
                if kind is Usage:
                    usage = event  # type: ignore[assignment]
                elif kind is Answering:
                    summary.answering = event  # type: ignore[assignment]
                elif kind is CacheStatus:
                    summary.cache = event.result  # type: ignore[union-attr]
                elif kind is Failed:
                    raise from_event(event)  # type: ignore[arg-type]
                elif kind is Done:
                    answering = summary.answering or NOBODY
                    if free:
                        summary.cost = FREE
                    else:
                        summary.usage = usage
                        summary.cost = charge(runtime, summary, answering, usage)
                    return found, usage, answering
                else:
                    found.append(event)
    except ApiError as exc:
        count_refusal(runtime, exc)
        raise
    finally:
        if relay is not None:
            relay.close()
        release_holds(runtime, summary, hold)
