"""`POST /chat` (whole answer as JSON) and `POST /stream` (SSE), the seed's two routes."""

from __future__ import annotations

import math
import time

import msgspec
from aiohttp import web

from modelrouter.actors import ActorStopped, MailboxFull, Relay, Route
from modelrouter.deadline import Deadline
from modelrouter.errors import ApiError, bad_request
from modelrouter.events import Chunk, Done, Failed, ToolCallDelta, Usage
from modelrouter.schemas import (
    ChatRequest,
    ChatResponse,
    ProviderMeta,
    chat_request_decoder,
    json_encoder,
)
from modelrouter.web import sse
from modelrouter.web.auth import check_auth
from modelrouter.web.nesting import check_nesting, deep_parameter
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, SUMMARY, Runtime

RELAY_SIZE = 64
STREAM_LEASE_KEY = "streams"
DEADLINE_GRACE = 1.0  # the router answers by the deadline; this only guards against a bug


class Answer(msgspec.Struct):
    """A whole answer gathered from the relay."""

    text: str
    tool_calls: list[ToolCallDelta]
    usage: Usage
    finish_reason: str


async def read_body(request: web.Request, runtime: Runtime) -> bytes:
    """The request body of an authenticated client, within the size limit, not empty."""
    check_auth(request, runtime.api_keys)
    limit = runtime.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    content = request.content
    if content.is_eof():
        # The whole body arrived with the head (nearly always): take it without aiohttp's read
        # loop, which cost more than the rest of this function.
        body = content.read_nowait()
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    else:
        try:
            body = await request.read()  # aiohttp enforces client_max_size (= the limit) here
        except web.RequestPayloadError:  # bad chunking or compression: the client's fault
            raise bad_request("request body is malformed (transfer or content encoding)") from None
    if not body:
        raise bad_request("request body is empty; expected a JSON object")
    return body


async def read_request(request: web.Request, runtime: Runtime) -> ChatRequest:
    body = await read_body(request, runtime)
    try:
        chat = chat_request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise deep_parameter(body) from None
    check_nesting(chat)
    for name in ("tools", "tool_choice", "parallel_tool_calls"):
        if getattr(chat, name) is not None:  # the seed's answer has no room for tool calls
            raise bad_request(f"`{name}` needs /v1/chat/completions", param=name)
    return chat


def start_route(
    request: web.Request, runtime: Runtime, chat: ChatRequest, *, stream: bool
) -> Relay:
    loop = runtime.loop
    relay = Relay(maxsize=RELAY_SIZE, eager=stream, loop=loop)
    deadline = loop.time() + runtime.settings.max_operation_timeout
    try:
        runtime.router.tell(Route(chat, relay, deadline, stream, request[REQUEST_ID]))
    except (MailboxFull, ActorStopped):
        raise ApiError(
            503, "overloaded", "the router is saturated; retry shortly", retry_after=1.0
        ) from None
    request[SUMMARY].relay = relay
    return relay


def failure(event: Failed) -> ApiError:
    return ApiError(
        event.status, event.type, event.message, retry_after=event.retry_after, param=event.param
    )


async def collect(relay: Relay) -> Answer:
    """Wait for the whole answer (or raise its failure); the relay is closed either way.

    No timer here: the routing job answers by the request's deadline (each attempt is cut to
    it), and ends the relay however it ends itself."""
    parts: list[str] = []
    calls: list[ToolCallDelta] = []
    usage = Usage()
    try:
        while True:
            for event in await relay.take():
                kind = type(event)
                if kind is Chunk:
                    parts.append(event.text)  # type: ignore[union-attr]
                elif kind is ToolCallDelta:
                    calls.append(event)  # type: ignore[arg-type]
                elif kind is Usage:
                    usage = event  # type: ignore[assignment]
                elif kind is Failed:
                    raise failure(event)  # type: ignore[arg-type]
                elif kind is Done:
                    reason = event.finish_reason or "stop"  # type: ignore[union-attr]
                    return Answer("".join(parts), calls, usage, reason)
    finally:
        relay.close()


async def chat(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    relay = start_route(request, runtime, await read_request(request, runtime), stream=False)
    answer = await collect(relay)
    request[SUMMARY].usage = answer.usage
    return _chat_response(request, relay, answer.text, answer.usage)


def _chat_response(request: web.Request, relay: Relay, text: str, usage: Usage) -> web.Response:
    meta = ProviderMeta(usage.total_tokens, usage.prompt_tokens, usage.completion_tokens)
    body = ChatResponse(
        text, relay.provider or "", relay.model or "", meta, request[REQUEST_ID], relay.attempts
    )
    return web.Response(
        body=json_encoder.encode(body),
        content_type="application/json",
        headers={"x-modelrouter-provider": relay.provider or ""},
    )


async def stream(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    chat_request = await read_request(request, runtime)
    return await serve_stream(request, runtime, chat_request, sse.SeedStream(request[REQUEST_ID]))


async def serve_stream(
    request: web.Request, runtime: Runtime, chat_request: ChatRequest, fmt: sse.StreamFormat
) -> web.StreamResponse:
    """Route `chat_request` as a stream written in `fmt`, within MAX_CONCURRENT_STREAMS."""
    settings = runtime.settings
    state = runtime.state
    # One process alone releases its own leases in `finally`: no TTL, no renewal task.
    ttl = settings.stream_lease_ttl if state.leases_expire else math.inf
    lease = await state.acquire_lease(STREAM_LEASE_KEY, settings.max_concurrent_streams, ttl=ttl)
    if lease is None:
        runtime.metrics.rejected_streams.inc()
        raise ApiError(
            429,
            "too_many_streams",
            "MAX_CONCURRENT_STREAMS reached; retry shortly",
            retry_after=1.0,
        )
    runtime.metrics.active_streams.inc()
    relay: Relay | None = None
    if state.leases_expire:  # renewed while the stream runs; a dead replica's slots expire
        state.keep_lease(lease, ttl=ttl, every=settings.stream_lease_renew)
    try:
        relay = start_route(request, runtime, chat_request, stream=True)
        return await _relay_stream(request, runtime, relay, fmt)
    finally:
        if relay is not None:
            relay.close()
        runtime.metrics.active_streams.dec()
        await state.release_lease(lease)  # on its way even if this task is cancelled again


async def _relay_stream(
    request: web.Request, runtime: Runtime, relay: Relay, fmt: sse.StreamFormat
) -> web.StreamResponse:
    summary = request[SUMMARY]
    response = web.StreamResponse(headers=sse.HEADERS)
    # One guard for the whole stream (the router ends it by the request's deadline), not a
    # timer per batch of chunks.
    loop = runtime.loop
    guard = loop.time() + runtime.settings.max_operation_timeout + DEADLINE_GRACE
    try:
        with Deadline(loop, guard):
            events = await relay.take()
            if type(events[0]) is Failed:
                raise failure(events[0])  # nothing sent yet: a plain HTTP error
            await _start_stream(request, runtime, relay, response)
            head = fmt.start(relay)
            while True:
                out: list[bytes] = [head] if head else []
                head = b""
                for event in events:
                    out.append(fmt.event(event))
                    kind = type(event)
                    if kind is Usage:
                        summary.usage = event  # type: ignore[assignment]
                    elif kind is Done or kind is Failed:
                        if kind is Failed:
                            summary.error = event.type  # type: ignore[union-attr]
                        await response.write(b"".join(out))
                        await response.write_eof()
                        return response
                data = b"".join(out)
                if data:
                    await response.write(data)
                events = await relay.take()
    except TimeoutError:
        if not response.prepared:
            raise ApiError(504, "timeout", "no answer within MAX_OPERATION_TIMEOUT") from None
        summary.error = "timeout"
        await response.write(fmt.error("timeout", "stream deadline passed"))
        return response


async def _start_stream(
    request: web.Request, runtime: Runtime, relay: Relay, response: web.StreamResponse
) -> None:
    """Send the headers: from here on, failures end the stream instead of changing its status."""
    response.headers["x-modelrouter-provider"] = relay.provider or ""
    response.headers["X-Request-ID"] = request[REQUEST_ID]
    await response.prepare(request)
    if relay.provider is not None:  # once per request: the first chunk goes out now
        started = request[SUMMARY].started
        runtime.metrics.observe_first_chunk(relay.provider, time.perf_counter() - started)
