"""The mock LLM provider: an aiohttp app serving OpenAI, Ollama, Anthropic, Azure OpenAI and
Gemini flavours.

Every provider route also exists behind ``/x/<spec>/``: the spec's faults override the
defaults for that one request (``/x/status=500/v1/chat/completions``). Test endpoints:
``GET /_mock/stats``, ``POST /_mock/reset``, ``GET /_mock/requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from modelrouter.mock.anthropic import ANTHROPIC
from modelrouter.mock.azure import AZURE
from modelrouter.mock.embeddings import (
    count_tokens,
    gemini_batch_embed,
    ollama_embed,
    openai_embeddings,
)
from modelrouter.mock.faults import Faults, add_mock_arguments, faults_from_args, slow
from modelrouter.mock.flavours import OLLAMA, OPENAI, STREAM_ERROR, Flavour, Reply
from modelrouter.mock.gemini import GEMINI
from modelrouter.mock.state import MockState
from modelrouter.mock.stream import HOLD_SECONDS, Streamer, abort, close, pause
from modelrouter.mock.text import DEFAULT_MODEL, TOOL_ARGUMENTS, ChatRequest, tokens_for

_new_event_loop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    from uvloop import new_event_loop as _new_event_loop
except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
    _new_event_loop = None

__all__ = [
    "STATE",
    "add_mock_arguments",
    "create_mock_app",
    "faults_from_args",
    "run_mock",
    "start_mock",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE = web.AppKey("modelrouter_mock_state", MockState)
JSON = "application/json"
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Wi-Fi</body></html>"
MAX_BODY_BYTES = 64 * 1024 * 1024
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_OPENAI_MODELS = _encode(
    {
        "object": "list",
        "data": [{"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "mock"}],
    }
)
_OLLAMA_TAGS = _encode(
    {
        "models": [
            {
                "name": DEFAULT_MODEL,
                "model": DEFAULT_MODEL,
                "modified_at": "2024-01-01T00:00:00Z",
                "size": 0,
                "digest": "0" * 64,
                "details": {"family": "mock", "parameter_size": "0B"},
            }
        ]
    }
)


def _raw_spec(request: web.Request) -> str | None:
    """The still-encoded ``<spec>`` of an ``/x/<spec>/...`` path, else None."""
    if "spec" not in request.match_info:
        return None
    return request.raw_path.split("/", 3)[2]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Mock Error"


def _error(
    request: web.Request, flavour: Flavour, faults: Faults, status: int, message: str
) -> web.Response:
    if faults.echo_auth:
        message += _received_credentials(request)
    headers = flavour.retry_headers(faults.retry_after) if faults.retry_after else None
    return web.Response(
        status=status,
        reason=_reason(status),
        body=flavour.error_body(status, message),
        content_type=JSON,
        headers=headers,
    )


def _received_credentials(request: web.Request) -> str:
    seen = [
        f"{name}: {request.headers[name]}"
        for name in ("Authorization", "x-api-key", "api-key", "x-goog-api-key")
        if name in request.headers
    ]
    return f" (received {'; '.join(seen) if seen else 'no credentials'})"


def _chat_handler(flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _chat(request, flavour)

    return handle


async def _chat(request: web.Request, flavour: Flavour) -> web.StreamResponse:
    state = request.app[STATE]
    spec = _raw_spec(request)
    seen = state.count("" if spec is None else "/x/" + spec)
    try:
        body: Any = _decode(await request.read())
    except msgspec.DecodeError:
        body = None
    state.record(request.rel_url.raw_path_qs, request.headers, body)
    try:
        faults = state.faults(spec)
    except ValueError as exc:
        return _error(request, flavour, state.defaults, 400, str(exc))
    failing = faults.status is not None and (faults.fail_first is None or seen <= faults.fail_first)
    if failing or faults.html:
        return await _fail(request, flavour, faults, state)
    if not isinstance(body, dict):
        return _error(request, flavour, faults, 400, "request body must be a JSON object")
    try:
        chat = flavour.parse(body, request.rel_url.raw_path_qs)
    except ValueError as exc:
        return _error(request, flavour, faults, 400, f"invalid chat request: {exc}")
    if faults.slow_share:
        faults = slow(faults, seen)
    reply = _reply(flavour, chat, faults)
    if chat.stream:
        return await _stream(request, flavour, reply, faults, state)
    return await _complete(request, flavour, reply, faults, state)


def _reply(flavour: Flavour, chat: ChatRequest, faults: Faults) -> Reply:
    if faults.tool_call and flavour.supports_tools:
        return Reply(chat, list(TOOL_ARGUMENTS), tool_call=True)
    return Reply(chat, tokens_for(chat, faults))


async def _fail(
    request: web.Request, flavour: Flavour, faults: Faults, state: MockState
) -> web.Response:
    """The ``status`` fault: after ``first_delay`` (if any), the flavour's error body; or the
    ``html`` fault: an HTML page with status 200."""
    if faults.first_delay:
        await pause(request, state, faults.first_delay)
    if faults.html:
        return web.Response(body=HTML_PAGE, content_type="text/html")
    status = faults.status or 500
    return _error(request, flavour, faults, status, f"mock error {status}")


async def _complete(
    request: web.Request, flavour: Flavour, reply: Reply, faults: Faults, state: MockState
) -> web.StreamResponse:
    """A non-stream answer; token-indexed faults apply to the whole response."""
    if faults.first_delay and not await pause(request, state, faults.first_delay):
        return _error(request, flavour, faults, 503, "mock provider is shutting down")
    if faults.stall_after is not None:
        await pause(request, state, HOLD_SECONDS)
    if faults.reset_after is not None or faults.stall_after is not None:
        abort(request)
        return web.Response()
    if faults.stream_error_after is not None:
        return _error(request, flavour, faults, 500, STREAM_ERROR)
    if faults.malformed:
        return web.Response(body=flavour.malformed_body, content_type=JSON)
    body = flavour.complete(reply)
    if faults.truncate or faults.hold_open:
        return await _unfinished(request, body, faults, state)
    return web.Response(body=body, content_type=JSON)


async def _unfinished(
    request: web.Request, body: bytes, faults: Faults, state: MockState
) -> web.StreamResponse:
    """A whole answer that never ends: cut halfway (`truncate`, the connection closed with
    fewer bytes than Content-Length said), or all sent and then held open (`hold_open`)."""
    response = web.StreamResponse(headers={"Content-Type": JSON})
    if faults.truncate:
        response.content_length = len(body)
    await response.prepare(request)
    if faults.truncate:
        await response.write(body[: len(body) // 2])
        close(request)
        return response
    await response.write(body)
    await pause(request, state, HOLD_SECONDS)
    abort(request)
    return response


async def _stream(
    request: web.Request, flavour: Flavour, reply: Reply, faults: Faults, state: MockState
) -> web.StreamResponse:
    script = flavour.script(reply)
    response = web.StreamResponse(
        headers={"Content-Type": flavour.stream_content_type, "Cache-Control": "no-cache"}
    )
    message = STREAM_ERROR + (_received_credentials(request) if faults.echo_auth else "")
    state.open_streams += 1
    try:
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to finish
            streamer = Streamer(
                request=request,
                response=response,
                flavour=flavour,
                faults=faults,
                state=state,
                error_message=message,
            )
            await streamer.run(script)
    finally:
        state.open_streams -= 1
    return response


def _json_handler(flavour: Flavour, answer: Callable[[dict[str, Any]], bytes]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        spec = _raw_spec(request)
        seen = state.count("" if spec is None else "/x/" + spec)
        try:
            body: Any = _decode(await request.read())
        except msgspec.DecodeError:
            body = None
        state.record(request.rel_url.raw_path_qs, request.headers, body)
        try:
            faults = state.faults(spec)
        except ValueError as exc:
            return _error(request, flavour, state.defaults, 400, str(exc))
        if faults.status is not None and (faults.fail_first is None or seen <= faults.fail_first):
            return await _fail(request, flavour, faults, state)
        if not isinstance(body, dict):
            return _error(request, flavour, faults, 400, "request body must be a JSON object")
        given = body.get("input")
        if faults.short and isinstance(given, list) and len(given) > 1:
            body = {**body, "input": given[:-1]}
        try:
            return web.Response(body=answer(body), content_type=JSON)
        except ValueError as exc:
            return _error(request, flavour, faults, 400, f"invalid request: {exc}")

    return handle


def _listing_handler(flavour: Flavour, body: bytes) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        try:
            faults = state.faults(_raw_spec(request))
        except ValueError as exc:
            return _error(request, flavour, state.defaults, 400, str(exc))
        if faults.status is not None:
            return await _fail(request, flavour, faults, state)
        return web.Response(body=body, content_type=JSON)

    return handle


async def _stats(request: web.Request) -> web.Response:
    return web.Response(body=_encode(request.app[STATE].stats()), content_type=JSON)


async def _requests(request: web.Request) -> web.Response:
    return web.Response(body=_encode(list(request.app[STATE].recent)), content_type=JSON)


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return web.Response(body=_encode(state.stats()), content_type=JSON)


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].stopping = True  # wakes stalls and long delays within POLL_SECONDS


def create_mock_app(defaults: Faults | None = None) -> web.Application:
    """The mock provider app; ``defaults`` are the faults of requests without a prefix."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = MockState(defaults if defaults is not None else Faults())
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/chat/completions", _chat_handler(OPENAI)),
        ("POST", "/api/chat", _chat_handler(OLLAMA)),
        ("POST", "/v1/messages", _chat_handler(ANTHROPIC)),
        ("POST", "/v1/embeddings", _json_handler(OPENAI, openai_embeddings)),
        ("POST", "/api/embed", _json_handler(OLLAMA, ollama_embed)),
        ("POST", "/v1/messages/count_tokens", _json_handler(ANTHROPIC, count_tokens)),
        ("POST", "/openai/deployments/{deployment}/chat/completions", _chat_handler(AZURE)),
        ("POST", "/openai/v1/chat/completions", _chat_handler(AZURE)),
        (
            "POST",
            "/openai/deployments/{deployment}/embeddings",
            _json_handler(AZURE, openai_embeddings),
        ),
        ("POST", "/openai/v1/embeddings", _json_handler(AZURE, openai_embeddings)),
        # Before the chat methods' route, which would take any `{model}:{method}`.
        (
            "POST",
            "/v1beta/models/{model}:batchEmbedContents",
            _json_handler(GEMINI, gemini_batch_embed),
        ),
        ("POST", "/v1beta/models/{call}", _chat_handler(GEMINI)),
        ("GET", "/v1/models", _listing_handler(OPENAI, _OPENAI_MODELS)),
        ("GET", "/api/tags", _listing_handler(OLLAMA, _OLLAMA_TAGS)),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/x/{spec}" + path, handler)
    app.router.add_get("/_mock/stats", _stats)
    app.router.add_get("/_mock/requests", _requests)
    app.router.add_post("/_mock/reset", _reset)
    app.on_shutdown.append(_on_shutdown)
    return app


async def start_mock(
    host: str = "127.0.0.1", port: int = 0, defaults: Faults | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner (``cleanup()`` it) and the port."""
    runner = web.AppRunner(
        create_mock_app(defaults),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    address = runner.addresses[0]
    return runner, int(address[1])


async def _serve(host: str, port: int, defaults: Faults) -> None:
    runner, bound = await start_mock(host, port, defaults)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    print(f"mock provider listening on http://{host}:{bound}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await runner.cleanup()


def run_mock(host: str, port: int, defaults: Faults) -> None:
    """Serve until SIGINT/SIGTERM (blocking); uses uvloop when it is installed."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(_serve(host, port, defaults))
