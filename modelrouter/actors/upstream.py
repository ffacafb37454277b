"""One attempt against one provider: the HTTP call, its deadlines, and the events it relays.

Runs in the request's routing task. It returns an `AttemptResult` for every ending except
cancellation and the client leaving (`ClientGone`), so a provider failure is data, never an
unhandled exception. It writes the answer's events into the request's relay, never its end: the
routing task ends the relay, once.

Its timers measure the provider, never the client: while the relay is full (the client reads
slowly) the attempt waits with only the request's deadline running, and the provider's window
starts again once the client has made room. Between chunks, only data counts as progress: a
stream that sends nothing but SSE comments stalls like one that sends nothing.
"""

from __future__ import annotations

import asyncio
import time

from modelrouter.actors.messages import Attempt, AttemptResult
from modelrouter.actors.relay import Relay
from modelrouter.answer_redaction import PASS_THROUGH, AnswerStream
from modelrouter.deadline import Deadline
from modelrouter.events import (
    Answering,
    Chunk,
    Done,
    Embeddings,
    Event,
    Finish,
    Thinking,
    ToolCallDelta,
    UpstreamFailure,
    Usage,
)
from modelrouter.providers import Adapter
from modelrouter.providers.base import MAX_ERROR_BODY, bad_response
from modelrouter.providers.continuation import continue_final
from modelrouter.providers.framing import FramingError
from modelrouter.redact import Redactor
from modelrouter.schemas import ChatRequest, EmbedChat, Operation
from modelrouter.tenants.cost import estimated_usage
from modelrouter.transport import BadResponse, Connection, ConnectTimeout, Pool, Response


class _Progress:
    """What the attempt has reached, to name the timeout that cut it."""

    __slots__ = (
        "answer",
        "finish_reason",
        "first_byte",
        "first_chunk",
        "usage",
        "window",
        "written",
    )

    def __init__(self, window: float, answer: AnswerStream = PASS_THROUGH) -> None:
        self.window = window  # PROVIDER_TIMEOUT: the longest stall between chunks
        self.answer = answer  # the answer's text, redacted of the configured secrets
        self.first_chunk = False
        self.written = 0.0  # perf_counter when the request was written; 0: not timed
        self.first_byte: float | None = None  # seconds from written to the first event or head
        self.finish_reason: str | None = None
        self.usage: Usage | None = None  # pieces merged, relayed once when the stream ends


MAX_HEADS = 64  # request heads kept per provider whose path names the model (Azure, Gemini)


class Upstream:
    """One provider's way out: its adapter, its connection pool, its pre-encoded request head,
    the redactor that cleans what the upstream says (errors) before anyone else reads it, and
    the one that takes this upstream's own credentials out of its answers (`answers`: only
    what it received from us could it echo, so only that is held back at chunk boundaries).
    `timed`: its attempts measure their time to first byte (a deployment some `latency` group
    ranks; others pay nothing for it)."""

    __slots__ = (
        "_heads",
        "adapter",
        "answers",
        "head",
        "operation_heads",
        "pool",
        "redact",
        "timed",
    )

    def __init__(
        self,
        adapter: Adapter,
        pool: Pool,
        redact: Redactor,
        answers: Redactor | None = None,
        *,
        timed: bool = False,
    ) -> None:
        self.adapter = adapter
        self.pool = pool
        self.redact = redact
        self.answers = answers if answers is not None else Redactor()
        self.timed = timed
        self.head = pool.header_block("POST", "", adapter.headers)
        # Keyed by model and stream flag (chat) or operation (the others).
        self._heads: dict[tuple[str, bool | str], bytes] = {}
        # One head per operation other than chat that the adapter offers (its own endpoint).
        self.operation_heads = {
            operation: pool.header_block("POST", "", adapter.headers, url=url)
            for operation, url in adapter.endpoints.items()
        }

    def head_of(self, attempt: Attempt) -> bytes:
        """The request head of `attempt`."""
        operation = attempt.request.operation
        if operation != "chat":
            if self.adapter.model_in_path:
                return self.operation_head_for(operation, attempt.model)
            return self.operation_heads[operation]
        if self.adapter.model_in_path:
            return self.head_for(attempt.model, attempt.stream)
        return self.head

    def head_for(self, model: str, stream: bool) -> bytes:
        """The request head for `model`, when the adapter's path names the model (else `head`
        serves every request): encoded once per model and mode, a bounded few kept (clients
        choose the models)."""
        head = self._heads.get((model, stream))
        if head is None:
            path = self.adapter.path(model, stream=stream)
            head = self.pool.header_block("POST", path, self.adapter.headers)
            if len(self._heads) < MAX_HEADS:
                self._heads[model, stream] = head
        return head

    def operation_head_for(self, operation: Operation, model: str) -> bytes:
        """The head of an operation whose path names the model (Azure's deployment, Gemini's
        model), kept as `head_for` keeps chat's."""
        head = self._heads.get((model, operation))
        if head is None:
            url = self.adapter.endpoints[operation]
            path = self.adapter.operation_path(operation, model)
            head = self.pool.header_block("POST", path, self.adapter.headers, url=url)
            if len(self._heads) < MAX_HEADS:
                self._heads[model, operation] = head
        return head


async def run_attempt(
    upstream: Upstream,
    attempt: Attempt,
    *,
    provider_timeout: float,
    first_chunk_timeout: float,
    connect_timeout: float,
    loop: asyncio.AbstractEventLoop | None = None,
    traceparent: bytes = b"",
) -> AttemptResult:
    """One attempt, its timers in phases: opening a connection (TCP, proxy, TLS) within
    `connect_timeout` (`connect_error`), the first chunk within `first_chunk_timeout` of the
    request written (a whole answer: `provider_timeout`), then `provider_timeout` between
    chunks; each cut to the request's deadline, whose expiry blames no provider. PoolFull
    (every allowed connection busy) goes to the caller: the attempt never started.
    `traceparent`: the attempt span's header line, sent upstream (b"": none)."""
    loop = loop or asyncio.get_running_loop()
    adapter = upstream.adapter
    redact = upstream.redact
    answers = upstream.answers
    progress = _Progress(provider_timeout, answers.stream() if attempt.stream else PASS_THROUGH)
    first_window = first_chunk_timeout if attempt.stream else provider_timeout
    extra = _extra_headers(adapter, attempt, traceparent)
    attempt.relay.announce(Answering(adapter.name, attempt.model, attempt.number))
    timer: Deadline | None = None
    try:
        # An adapter may refuse a request it cannot map (an UpstreamFailure with no reason).
        operation = attempt.request.operation
        body = _mapped(adapter, attempt, operation)
        pool = upstream.pool
        conn = await _connect(pool, attempt.deadline - loop.time(), connect_timeout, redact)
        if type(conn) is AttemptResult:
            return conn
        assert isinstance(conn, Connection)
        # The first chunk's window starts with the request written: nothing awaits before it.
        with Deadline(loop, min(loop.time() + first_window, attempt.deadline)) as timer:
            head = upstream.head_of(attempt)
            if upstream.timed:
                progress.written = time.perf_counter()
            response = await pool.exchange(conn, head, body, extra)
            if progress.written and not attempt.stream:  # a whole answer's head: when ready
                progress.first_byte = time.perf_counter() - progress.written
            try:
                if response.status >= 300:
                    raise await _status_failure(adapter, response)
                await _read(
                    adapter,
                    response,
                    attempt,
                    timer,
                    progress,
                    chat=operation == "chat",
                    answers=answers,
                )
            finally:
                response.release()
    except asyncio.CancelledError:  # a hedge's loser: its upstream's usage may be billed
        attempt.relay.cancelled_with(progress.usage)
        raise
    except TimeoutError:
        _leave_usage(attempt.relay, progress)
        # Whether the request's own deadline was the one that fired: the timer's time says it
        # (the loop's clock may read a hair short of it, timers fire to the millisecond).
        cut = timer is not None and timer.when >= attempt.deadline
        return _timed_out(attempt, progress, cut=cut, first_chunk_timeout=first_chunk_timeout)
    except UpstreamFailure as failure:
        _leave_usage(attempt.relay, progress)
        # Upstream text may echo the credential it received: redact it where it enters.
        return AttemptResult(
            False,
            failure.reason,
            redact(failure.message),
            failure.status,
            failure.retry_after,
            emitted=progress.first_chunk,
        )
    except (BadResponse, FramingError) as exc:
        _leave_usage(attempt.relay, progress)
        message = redact(_describe(exc))
        return AttemptResult(False, "bad_response", message, emitted=progress.first_chunk)
    except OSError as exc:  # refused, reset, closed mid-answer, TLS failure
        _leave_usage(attempt.relay, progress)
        message = redact(_describe(exc))
        return AttemptResult(False, "connect_error", message, emitted=progress.first_chunk)
    return AttemptResult(
        True,
        finish_reason=progress.finish_reason or "stop",
        first_byte=progress.first_byte,
        usage=progress.usage,
    )


def _mapped(adapter: Adapter, attempt: Attempt, operation: str) -> bytes:
    """The upstream body; a continuation's asks the server to continue its last message."""
    if operation != "chat":
        return adapter.map_operation(attempt.request, attempt.model)
    body = adapter.map_request(attempt.request, attempt.model, stream=attempt.stream)
    if attempt.continuation == "assistant_prefix":
        return continue_final(body)
    return body


async def _read(
    adapter: Adapter,
    response: Response,
    attempt: Attempt,
    timer: Deadline,
    progress: _Progress,
    *,
    chat: bool,
    answers: Redactor,
) -> None:
    """Read the answer into the relay: a stream, a whole chat answer (`answers` takes the
    upstream's credentials out of it), or another operation's answer."""
    if attempt.stream:
        await _pump_stream(
            adapter, response=response, attempt=attempt, timer=timer, progress=progress
        )
    elif chat:
        await _read_whole(adapter, response, attempt, timer, progress, answers=answers)
    else:
        await _read_operation(adapter, response, attempt, timer, progress)


def _extra_headers(adapter: Adapter, attempt: Attempt, traceparent: bytes) -> bytes:
    """The request's own header lines. The request id passed the front's charset check, so
    it is safe in a header line."""
    extra = b"X-Request-ID: " + attempt.request_id.encode() + b"\r\n" + traceparent
    if type(attempt.request) is not ChatRequest:  # a client API's own request (NativeChat)
        extra += adapter.request_headers(attempt.request)
    return extra


def _leave_usage(relay: Relay, progress: _Progress) -> None:
    """A stream cut after its first chunk: the usage its provider gave so far (Anthropic's
    prompt tokens come first) goes to the client's side, which bills from it. Never waits: a
    full relay or a gone reader gets none (the stream is then billed from an estimate)."""
    usage = progress.usage
    if usage is not None and progress.first_chunk and not relay.closed:
        relay.offer(usage)


def _timed_out(
    attempt: Attempt, progress: _Progress, *, cut: bool, first_chunk_timeout: float
) -> AttemptResult:
    if attempt.stream and not progress.first_chunk and not cut:
        window = f"first chunk not received within {first_chunk_timeout:g}s"
        return AttemptResult(False, "first_chunk_timeout", window)
    what = "request deadline reached" if cut else f"no data for {progress.window:g}s"
    return AttemptResult(False, "timeout", what, cut_by_deadline=cut, emitted=progress.first_chunk)


async def _connect(
    pool: Pool, left: float, connect_timeout: float, redact: Redactor
) -> Connection | AttemptResult:
    """A connection from the pool within the connect window (cut to the `left` seconds of the
    request), or why not."""
    try:
        return await pool.checkout(connect_timeout=min(connect_timeout, left))
    except ConnectTimeout as exc:
        if left <= connect_timeout:  # the request's deadline, not the provider, ran out
            return AttemptResult(False, "timeout", "request deadline reached", cut_by_deadline=True)
        return AttemptResult(False, "connect_error", redact(str(exc)))


async def _status_failure(adapter: Adapter, response: Response) -> UpstreamFailure:
    try:
        body = await response.read(MAX_ERROR_BODY)
    except (OSError, BadResponse):
        body = b""
    retry_after = adapter.retry_after(response.header)
    return adapter.failure(response.status, body, retry_after, response.redirect_host())


async def _read_whole(
    adapter: Adapter,
    response: Response,
    attempt: Attempt,
    timer: Deadline,
    progress: _Progress,
    *,
    answers: Redactor,
) -> None:
    completion = adapter.map_response(await response.read())
    progress.finish_reason = completion.finish_reason
    progress.usage = completion.usage
    text = answers.answer(completion.text) if completion.text else ""
    events: list[Event] = [*completion.thinking] if completion.thinking else []
    if text:
        events.append(Chunk(text))
    events += completion.tool_calls
    events.append(completion.usage)
    relay = attempt.relay
    for event in events:
        if not relay.offer(event):
            await _wait_for_client(relay, event, timer, attempt.deadline, 0.0)


async def _read_operation(
    adapter: Adapter, response: Response, attempt: Attempt, timer: Deadline, progress: _Progress
) -> None:
    request = attempt.request
    events = adapter.map_operation_response(request.operation, await response.read())
    if isinstance(request, EmbedChat):
        events = _checked_embeddings(request, events)
    relay = attempt.relay
    for event in events:
        if isinstance(event, Usage):
            progress.usage = event
        if not relay.offer(event):
            await _wait_for_client(relay, event, timer, attempt.deadline, 0.0)


def _checked_embeddings(request: EmbedChat, events: list[Event]) -> list[Event]:
    """One vector per input, or the answer is a bad response (the walk moves on): a client
    zips inputs with vectors by position, and a short list would silently misalign them.
    A usage of no input tokens (Gemini's batch answer counts none) is estimated from the
    inputs, marked so: an embedding is never free to a budget."""
    given = request.embed.texts or request.embed.tokens or ()
    got = next((len(e.vectors) for e in events if isinstance(e, Embeddings)), 0)
    if got != len(given):
        raise bad_response(f"{got} embeddings for {len(given)} inputs")
    return [
        _estimated(request, e) if type(e) is Usage and not e.prompt_tokens else e for e in events
    ]


def _estimated(request: EmbedChat, usage: Usage) -> Usage:
    prompt = estimated_usage(request, 0, None).prompt_tokens + request.given_tokens()
    return Usage(prompt, usage.completion_tokens, estimated=True)


async def _wait_for_client(
    relay: Relay, event: Event, timer: Deadline, deadline: float, window: float
) -> None:
    """The relay is full: wait until the client has made room, with only the request's
    deadline running, then give the provider `window` seconds again (0: none needed)."""
    timer.reschedule(deadline)  # later: only noted, no timer re-armed
    await relay.put(event)
    if window:
        timer.reschedule(min(asyncio.get_running_loop().time() + window, deadline))


async def _pump_stream(
    adapter: Adapter,
    *,
    response: Response,
    attempt: Attempt,
    timer: Deadline,
    progress: _Progress,
) -> None:
    loop = asyncio.get_running_loop()
    provider_timeout = progress.window
    framer = adapter.framer()
    map_chunk = adapter.stream_mapper()
    relay = attempt.relay
    deadline = attempt.deadline
    timed = progress.written > 0.0  # time the first event (comments such as `: ping` are not)
    async for data in response.iter_body():
        payloads = framer.feed(data)
        if timed and payloads:
            progress.first_byte = time.perf_counter() - progress.written
            timed = False
        for payload in payloads:
            if await _relay_events(map_chunk(payload), progress, relay, timer, deadline):
                return
        # Only data moves the stall window on: comments (`: ping`) do not, and neither does
        # anything before the first chunk (the first-chunk window runs until then).
        if payloads and progress.first_chunk:
            timer.reschedule(min(loop.time() + provider_timeout, deadline))
    for payload in framer.finish():
        if await _relay_events(map_chunk(payload), progress, relay, timer, deadline):
            return
    raise bad_response("stream ended before its end marker")


async def _relay_events(
    events: list[Event], progress: _Progress, relay: Relay, timer: Deadline, deadline: float
) -> bool:
    """Relay text and tool-call pieces; keep usage and finish reason for the end. True at Done."""
    answer = progress.answer
    for event in events:
        kind = type(event)
        if kind is Chunk or kind is ToolCallDelta or kind is Thinking:
            out = event
            if kind is Chunk and answer is not PASS_THROUGH:
                text = answer.feed(event.text)  # type: ignore[union-attr]
                if not text:
                    continue  # held back: it may be the start of a secret
                out = Chunk(text)
            progress.first_chunk = True
            if not relay.offer(out):
                await _wait_for_client(relay, out, timer, deadline, progress.window)
        elif isinstance(event, Usage):
            progress.usage = event if progress.usage is None else progress.usage.merge(event)
        elif isinstance(event, Finish):
            progress.finish_reason = event.reason
        elif isinstance(event, Done):
            progress.finish_reason = progress.finish_reason or event.finish_reason
            rest = answer.flush()
            if rest:
                progress.first_chunk = True
                if not relay.offer(Chunk(rest)):
                    await _wait_for_client(relay, Chunk(rest), timer, deadline, 0.0)
            usage = progress.usage
            if usage is not None and not relay.offer(usage):
                await _wait_for_client(relay, usage, timer, deadline, 0.0)
            return True
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
