"""`POST /chat` (whole answer as JSON) and `POST /stream` (SSE), the seed's two routes."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from modelrouter.actors import ActorStopped, MailboxFull, Relay, Route
from modelrouter.errors import ApiError, bad_request
from modelrouter.events import Chunk, Done, Event, Failed, Usage
from modelrouter.schemas import (
    ChatRequest,
    ChatResponse,
    ProviderMeta,
    chat_request_decoder,
    json_encoder,
)
from modelrouter.state import Lease, SharedState
from modelrouter.web import sse
from modelrouter.web.auth import check_auth
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, Runtime

RELAY_SIZE = 64
STREAM_LEASE_KEY = "streams"
DEADLINE_GRACE = 1.0  # the router answers by the deadline; this only guards against a bug


async def read_request(request: web.Request, runtime: Runtime) -> ChatRequest:
    check_auth(request, runtime.api_keys)
    limit = runtime.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    body = await request.read()
    if not body:
        raise bad_request("request body is empty; expected a JSON object")
    try:
        return chat_request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None


def start_route(
    request: web.Request, runtime: Runtime, chat: ChatRequest, *, stream: bool
) -> Relay:
    relay = Relay(maxsize=RELAY_SIZE)
    deadline = asyncio.get_running_loop().time() + runtime.settings.max_operation_timeout
    try:
        runtime.router.tell(Route(chat, relay, deadline, stream, request[REQUEST_ID]))
    except (MailboxFull, ActorStopped):
        raise ApiError(
            503, "overloaded", "the router is saturated; retry shortly", retry_after=1.0
        ) from None
    return relay


async def take(relay: Relay, runtime: Runtime) -> list[Event]:
    async with asyncio.timeout(runtime.settings.max_operation_timeout + DEADLINE_GRACE):
        return await relay.take()


def failure(event: Failed) -> ApiError:
    return ApiError(event.status, event.type, event.message, retry_after=event.retry_after)


async def chat(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    relay = start_route(request, runtime, await read_request(request, runtime), stream=False)
    parts: list[str] = []
    usage = Usage()
    try:
        while True:
            for event in await take(relay, runtime):
                kind = type(event)
                if kind is Chunk:
                    parts.append(event.text)  # type: ignore[union-attr]
                elif kind is Usage:
                    usage = event  # type: ignore[assignment]
                elif kind is Failed:
                    raise failure(event)  # type: ignore[arg-type]
                elif kind is Done:
                    return _chat_response(request, relay, "".join(parts), usage)
    except TimeoutError:
        raise ApiError(504, "timeout", "no answer within MAX_OPERATION_TIMEOUT") from None
    finally:
        relay.close()


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
    settings = runtime.settings
    state = runtime.state
    ttl = settings.stream_lease_ttl
    lease = await state.acquire_lease(STREAM_LEASE_KEY, settings.max_concurrent_streams, ttl=ttl)
    if lease is None:
        raise ApiError(
            429,
            "too_many_streams",
            "MAX_CONCURRENT_STREAMS reached; retry shortly",
            retry_after=1.0,
        )
    runtime.metrics.active_streams.inc()
    relay: Relay | None = None
    renewal = asyncio.create_task(_keep_lease(state, lease, ttl, settings.stream_lease_renew))
    try:
        relay = start_route(request, runtime, chat_request, stream=True)
        return await _relay_stream(request, runtime, relay)
    finally:
        renewal.cancel()
        if relay is not None:
            relay.close()
        runtime.metrics.active_streams.dec()
        # Shielded: a second cancellation (shutdown) must not leave the slot held until its TTL.
        await asyncio.shield(state.release_lease(lease))


async def _keep_lease(state: SharedState, lease: Lease, ttl: float, every: float) -> None:
    """Renew the stream's slot while it runs; a replica that dies stops renewing, and its
    slots come back within the TTL."""
    while True:
        await asyncio.sleep(every)
        await state.renew_lease(lease, ttl=ttl)


async def _relay_stream(request: web.Request, runtime: Runtime, relay: Relay) -> web.StreamResponse:
    request_id = request[REQUEST_ID]
    try:
        events = await take(relay, runtime)
    except TimeoutError:
        raise ApiError(504, "timeout", "no answer within MAX_OPERATION_TIMEOUT") from None
    if type(events[0]) is Failed:
        raise failure(events[0])  # nothing sent yet: a plain HTTP error
    response = web.StreamResponse(headers=sse.HEADERS)
    response.headers["x-modelrouter-provider"] = relay.provider or ""
    await response.prepare(request)
    while True:
        out: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is Chunk:
                out.append(sse.data_event(event.text))  # type: ignore[union-attr]
            elif kind is Done:
                out.append(sse.DONE)
            elif kind is Failed:
                out.append(sse.error_event(event.type, event.message, request_id))  # type: ignore[union-attr]
            else:
                continue
            if kind is not Chunk:
                await response.write(b"".join(out))
                await response.write_eof()
                return response
        if out:
            await response.write(b"".join(out))
        try:
            events = await take(relay, runtime)
        except TimeoutError:
            await response.write(sse.error_event("timeout", "stream deadline passed", request_id))
            return response
