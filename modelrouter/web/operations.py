"""Answering a request that is not a chat (embeddings, a token count): routed as a whole
answer is (`web.answers.route`), its events gathered until the end."""

from __future__ import annotations

from aiohttp import web

from modelrouter.events import Answering, CacheStatus, Done, Event, Failed, Usage
from modelrouter.schemas import ChatRequest
from modelrouter.web.answers import NOBODY, deadline_of, route
from modelrouter.web.errors import from_event
from modelrouter.web.runtime import SUMMARY, Runtime


async def gather(
    request: web.Request, runtime: Runtime, chat: ChatRequest
) -> tuple[list[Event], Usage, Answering]:
    """The answer's events (its usage and who answered apart, noted on the summary but for
    the usage), or its failure raised. The relay is closed either way."""
    relay = route(request, runtime, chat, stream=False, deadline=deadline_of(runtime))
    summary = request[SUMMARY]
    found: list[Event] = []
    usage = Usage()
    try:
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
                    return found, usage, summary.answering or NOBODY
                else:
                    found.append(event)
    finally:
        relay.close()
