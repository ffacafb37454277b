"""The front middleware: request id, errors in the route family's format, the request's end."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.observability import CURRENT_REQUEST_ID, tracing
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.errors import (
    ANTHROPIC_ERRORS,
    OPENAI_ERRORS,
    SEED_ERRORS,
    ErrorFormat,
    error_response,
    from_http,
)
from modelrouter.web.runtime import REQUEST_ID, SUMMARY, Summary

log = structlog.get_logger("modelrouter.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes: debug level


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID")
    if given is not None and _VALID_ID.fullmatch(given):
        return given
    return new_request_id()


def new_request_id() -> str:
    # Unique across replicas (random per-process prefix) without a syscall per request.
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def error_format(request: web.Request) -> ErrorFormat:
    """Anthropic's error shape under /v1/messages, OpenAI's elsewhere under /v1 (unknown
    paths included), the seed's elsewhere."""
    path = request.path
    if path.startswith("/v1/"):
        return ANTHROPIC_ERRORS if path.startswith("/v1/messages") else OPENAI_ERRORS
    return SEED_ERRORS


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request[REQUEST_ID] = request_id_of(request)
    summary = request[SUMMARY] = Summary(started)
    route = _route_label(request)
    quiet = route in QUIET_ROUTES
    status = 500
    token = CURRENT_REQUEST_ID.set(request_id)
    span = None
    if tracing.ENABLED and not quiet:  # probes and scrapes are not traced
        span = tracing.server_span(
            request.headers, method=request.method, route=route, request_id=request_id
        )
    log.debug("request_started", route=route, method=request.method)
    try:
        try:
            response = await handler(request)
        except ApiError as exc:
            summary.error = exc.type
            response = error_response(error_format(request), exc, request_id)
        except web.HTTPException as exc:
            response = error_response(error_format(request), from_http(exc, request), request_id)
        except (asyncio.CancelledError, ConnectionResetError):
            # The client went away: its handler was cancelled, or a write found it gone first.
            status = CLIENT_CLOSED
            raise
        except Exception:
            log.exception("unhandled_error", path=request.path)
            error = ApiError(500, "internal_error", "internal error")
            response = error_response(error_format(request), error, request_id)
        status = response.status
        if not response.prepared:  # a stream sent its own headers, X-Request-ID included
            response.headers["X-Request-ID"] = request_id
            status = await _send(request, response)
        return response
    finally:
        seconds = time.perf_counter() - started
        request.app[ACCOUNTING].add(request, route, status, seconds, quiet)
        CURRENT_REQUEST_ID.reset(token)
        if span is not None:
            span.end(status)


async def _send(request: web.Request, response: web.StreamResponse) -> int:
    """Write the whole response now, so the client has it before the metrics and the log line
    are done (aiohttp would write it only after the middleware returns; it then finds it sent)."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        return CLIENT_CLOSED
    return response.status
