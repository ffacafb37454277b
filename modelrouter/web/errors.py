"""Error responses: one writer, one `ErrorFormat` per route family (the seed's, OpenAI's).

Every error says whether a retry can help, in the headers the SDKs read: `x-should-retry`
(`true`/`false`), and with a wait, `Retry-After` (seconds) and `retry-after-ms`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import msgspec
from aiohttp import web

from modelrouter.errors import ApiError, retryable
from modelrouter.events import Failed
from modelrouter.schemas import ErrorBody, ErrorEnvelope, StreamError, json_encoder

_encode = msgspec.json.Encoder().encode
_HTTP_TYPES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    417: "expectation_failed",
}


class ErrorFormat(Protocol):
    def body(self, error: ApiError, request_id: str) -> bytes:
        """The error's JSON body."""

    def stream_error(self, event: Failed, request_id: str) -> bytes:
        """The SSE `event: error` that cuts a stream already under way."""


class SeedErrors:
    """`{"error": {"type", "message", "request_id"}}`, as the seed documents."""

    def body(self, error: ApiError, request_id: str) -> bytes:
        return json_encoder.encode(ErrorEnvelope(ErrorBody(error.type, error.message, request_id)))

    def stream_error(self, event: Failed, request_id: str) -> bytes:
        error = StreamError(event.type, event.message, request_id, _retryable(event))
        return b"event: error\ndata: " + json_encoder.encode(error) + b"\n\n"


# OpenAI's error objects (https://platform.openai.com/docs/guides/error-codes, and the bodies
# its API sends): `type` is `invalid_request_error` for every 4xx but 429 (a bad key included,
# with code `invalid_api_key`), `requests` for a request-rate 429 (code `rate_limit_exceeded`)
# and `server_error` for a 5xx. The SDKs pick their exception class by status alone. Our own
# error type goes in `code` where OpenAI has no code of its own for the case.
_OPENAI_CODES = {
    "unauthorized": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
    "not_found": "unknown_url",
}


# Types of OpenAI's own that say more than the status: a budget spent is OpenAI's
# `insufficient_quota` (type and code), which its SDKs and clients know not to retry.
_OPENAI_TYPES = frozenset({"insufficient_quota"})


def openai_type(status: int, type_: str = "") -> str:
    if type_ in _OPENAI_TYPES:
        return type_
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


# OpenAI's words for a bad key. Some clients read them, not only the status: litellm takes an
# error whose body says `invalid_request_error` without this phrase for a bad request
# (BadRequestError), whatever its status; with it, a 401 is its AuthenticationError.
OPENAI_BAD_KEY = "Incorrect API key provided"


def openai_error(status: int, type_: str, message: str, param: str | None) -> dict[str, Any]:
    code = _OPENAI_CODES.get(type_, type_)
    if status == 401 and not message.startswith(OPENAI_BAD_KEY):
        message = f"{OPENAI_BAD_KEY}: {message}"  # the key itself is never repeated
    return {"message": message, "type": openai_type(status, type_), "param": param, "code": code}


class OpenAIErrors:
    """`{"error": {"message", "type", "param", "code"}}`, so OpenAI's SDKs raise their usual
    exception classes."""

    def body(self, error: ApiError, request_id: str) -> bytes:  # noqa: ARG002 - in X-Request-ID
        return _encode(
            {"error": openai_error(error.status, error.type, error.message, error.param)}
        )

    def stream_error(self, event: Failed, request_id: str) -> bytes:
        body = openai_error(event.status, event.type, event.message, event.param)
        body |= {"request_id": request_id, "retryable": _retryable(event)}
        return b"event: error\ndata: " + _encode({"error": body}) + b"\n\n"


SEED_ERRORS = SeedErrors()
OPENAI_ERRORS = OpenAIErrors()


def from_http(exc: web.HTTPException, request: web.BaseRequest) -> ApiError:
    """aiohttp's own errors (unknown path, wrong method, body too large) as ours."""
    allow = tuple(sorted(getattr(exc, "allowed_methods", ()) or ()))
    where = f"{request.method} {request.path}"
    if exc.status == 404:
        message = f"Invalid URL ({where})"
    elif exc.status == 405:
        message = f"Invalid method for URL ({where}); allowed: {', '.join(allow)}"
    elif exc.status == 417:  # aiohttp's own text quotes the header
        message = "the Expect header is not supported (only Expect: 100-continue is)"
    else:
        message = exc.reason
    return ApiError(exc.status, _HTTP_TYPES.get(exc.status, "http_error"), message, allow=allow)


def _retryable(event: Failed) -> bool:
    return retryable(event.status) if event.retryable is None else event.retryable


def from_event(event: Failed) -> ApiError:
    return ApiError(
        event.status,
        event.type,
        event.message,
        retry_after=event.retry_after,
        param=event.param,
        retryable=event.retryable,
    )


def error_response(fmt: ErrorFormat, error: ApiError, request_id: str) -> web.Response:
    response = web.Response(
        body=fmt.body(error, request_id), status=error.status, content_type="application/json"
    )
    headers = response.headers
    headers["X-Request-ID"] = request_id
    headers["x-should-retry"] = "true" if error.retryable else "false"
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(error.retry_after * 1000)))
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="modelrouter"'
    if error.allow:
        headers["Allow"] = ", ".join(error.allow)
    return response
