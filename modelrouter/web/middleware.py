"""The front middleware: request id, error mapping, access metrics and the request's log line."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.web.errors import error_response
from modelrouter.web.runtime import METRICS, REQUEST_ID

log = structlog.get_logger("modelrouter.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"
_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID")
    if given is not None and _VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request[REQUEST_ID] = request_id_of(request)
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except ApiError as exc:
            status = exc.status
            return error_response(
                exc.status, exc.type, exc.message, request_id, retry_after=exc.retry_after
            )
        except web.HTTPException as exc:
            status = exc.status
            kind = _HTTP_TYPES.get(exc.status, "http_error")
            return error_response(exc.status, kind, exc.reason, request_id)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception:
            log.exception("unhandled_error", path=request.path)
            return error_response(500, "internal_error", "internal error", request_id)
        else:
            status = response.status
            return response
        finally:
            request.app[METRICS].observe_request(
                _route_label(request), request.method, status, time.perf_counter() - started
            )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed or not, carries its X-Request-ID."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id
