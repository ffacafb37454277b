"""Error responses: `{"error": {"type", "message", "request_id"}}`, Retry-After where it helps."""

from __future__ import annotations

import math

from aiohttp import web

from modelrouter.schemas import ErrorBody, ErrorEnvelope, json_encoder


def error_response(
    status: int, type_: str, message: str, request_id: str, *, retry_after: float | None = None
) -> web.Response:
    body = json_encoder.encode(ErrorEnvelope(ErrorBody(type_, message, request_id)))
    response = web.Response(body=body, status=status, content_type="application/json")
    response.headers["X-Request-ID"] = request_id
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="modelrouter"'
    return response
