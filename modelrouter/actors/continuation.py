"""An opt-in continuation of a stream cut after its first byte (CONTINUE_ON_CUT).

A stream that has relayed text only (no tool-call delta) and is cut before its end is asked,
once, of the next candidate that declares how it continues an assistant turn: the same
messages plus an assistant message holding the text so far (`anthropic_prefill`: its trailing
whitespace trimmed, as Anthropic's API requires; `assistant_prefix`: sent as is, with the
fields vLLM's `continue_final_message` takes, see providers.continuation), `max_tokens`
reduced by what the cut attempt used. The client sees one stream: the switch is a `Continued`
event (an SSE comment line, which SSE clients ignore). Anything else ends as today, with
`event: error`.

The walk without continuation is untouched: the router builds this one only for streams that
may continue, and only they record what they relay (`Recording`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
import structlog

from modelrouter.actors.fallback import Fallback
from modelrouter.actors.hedge import HedgedFallback
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, Route
from modelrouter.actors.relay import Relay
from modelrouter.events import (
    Answering,
    CacheStatus,
    Chunk,
    Continued,
    Done,
    Event,
    Failed,
    ToolCallDelta,
    Usage,
)
from modelrouter.providers.continuation import continuation_of
from modelrouter.routing import Candidate
from modelrouter.routing.hedging import HINTS
from modelrouter.schemas import ChatRequest, Message
from modelrouter.tenants.cost import estimated_tokens

log = structlog.get_logger("modelrouter.router")


class Recording(Relay):
    """The request's relay, written through, noting the text and whether a tool call went.
    `seam`: whitespace the client saw that a prefill had to trim; the continuation's first
    text repeating it loses it, so nothing is doubled at the seam."""

    __slots__ = ("seam", "target", "texts", "tools", "usage")

    def __init__(self, target: Relay) -> None:
        super().__init__(maxsize=target.maxsize)
        self.target = target
        self.texts: list[str] = []
        self.tools = False
        self.usage: Usage | None = None
        self.seam = ""

    def _note(self, event: Event) -> None:
        kind = type(event)
        if kind is Chunk:
            self.texts.append(event.text)  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            self.tools = True
        elif kind is Usage:
            self.usage = event  # type: ignore[assignment]

    def offer(self, event: Event) -> bool:
        if self.seam and type(event) is Chunk:
            event = self._past_seam(event)
            if not event.text:
                return True
        if self.target.offer(event):
            self._note(event)
            return True
        return False

    async def put(self, event: Event) -> None:
        if self.seam and type(event) is Chunk:
            event = self._past_seam(event)
            if not event.text:
                return
        await self.target.put(event)
        self._note(event)

    def _past_seam(self, chunk: Chunk) -> Chunk:
        seam, self.seam = self.seam, ""
        if chunk.text.startswith(seam):
            return Chunk(chunk.text[len(seam) :])
        return chunk

    def announce(self, event: Answering | CacheStatus) -> None:
        self.target.announce(event)

    @property
    def closed(self) -> bool:
        return self.target.closed


class Continuing(Fallback):
    """Fallback's walk writing through a `Recording`; a cut of text only is continued once."""

    def __init__(self, route: Route, candidates: list[Candidate], **walk: Any) -> None:
        """`walk`: the keywords of the walk it extends (Fallback's, or HedgedFallback's)."""
        self.recording = Recording(route.relay)
        recorded = msgspec.structs.replace(route, relay=self.recording)
        super().__init__(recorded, candidates, **walk)
        self.cut: str | None = None  # the deployment whose stream was cut

    def _judge(self, provider: str, result: AttemptResult) -> Done | Failed | None:
        if not result.ok and result.emitted and result.reason is not None:
            self.cut = provider
        return super()._judge(provider, result)

    async def run(self) -> Done | Failed:
        ended = await super().run()
        cut, recording = self.cut, self.recording
        if type(ended) is not Failed or cut is None or recording.tools or not recording.texts:
            return ended
        self.cut = None  # at most one continuation per request
        continued = await self._continue(cut, "".join(recording.texts))
        return ended if continued is None else continued

    async def _continue(self, cut: str, text: str) -> Done | Failed | None:
        """Ask each candidate that can continue, in order, until one answers (None: none
        could, and the cut's error stands)."""
        tried = {cut, *(name for name, _ in self.failures)}
        told = False
        for candidate in self.candidates:
            actor = candidate.actor
            mode = continuation_of(actor.provider)
            if actor.name in tried or mode == "none":
                continue
            prefix = text.rstrip() if mode == "anthropic_prefill" else text
            if not prefix.strip():
                continue
            if self.loop.time() >= self.route.deadline:
                return None
            if not told:  # the switch, said once, before the continuation's first byte
                continued = Continued(cut, actor.name, candidate.model, self.attempts + 1)
                await self.recording.put(continued)
                told = True
            self.recording.seam = text[len(prefix) :]
            attempt = Attempt(
                self._continued(prefix, text),
                candidate.model,
                self.recording,
                True,
                self.route.deadline,
                self.route.request_id,
                self.attempts + 1,
                False,
                mode,
            )
            result = await actor.attempt(attempt, admitted=partial(self._admitted, actor.name))
            if type(result) is Admission:
                continue
            assert isinstance(result, AttemptResult)
            ended = self._after(cut, actor.name, result)
            if ended is not None:
                return ended
            tried.add(actor.name)
        return None

    def _after(self, cut: str, provider: str, result: AttemptResult) -> Done | Failed | None:
        if result.ok:
            self.metrics.count_continuation(cut, provider, "ok")
            log.info("stream_continued", from_provider=cut, to_provider=provider)
            hints = HINTS.get()
            if hints is not None:
                hints.continued_from = cut
            return Done(result.finish_reason)
        self.metrics.count_continuation(cut, provider, "failed")
        if result.emitted or result.reason is None:
            hints = HINTS.get()
            if hints is not None:
                hints.continued_from = cut
            return super()._judge(provider, result)
        self.failures.append((provider, result))
        return None

    def _continued(self, prefix: str, text: str) -> ChatRequest:
        """The request again, with the text so far as the assistant's turn to continue, and
        `max_tokens` less what the cut attempt used (its usage, else an estimate)."""
        request = self.route.request
        messages = [*request.messages, Message(role="assistant", content=prefix)]
        max_tokens = request.max_tokens
        if max_tokens is not None:
            usage = self.recording.usage
            used = usage.completion_tokens if usage is not None and usage.completion_tokens else 0
            used = used or estimated_tokens(len(text))
            max_tokens = max(1, max_tokens - used)
        return msgspec.structs.replace(request, messages=messages, max_tokens=max_tokens)


class HedgedContinuing(Continuing, HedgedFallback):
    """A hedged walk whose cut stream may be continued: the race's winner writes through the
    recording, and a cut of its text is continued as in `Continuing`."""
