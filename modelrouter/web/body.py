"""Reading a request's body: within MAX_BODY_BYTES, not empty."""

from __future__ import annotations

from aiohttp import web

from modelrouter.errors import ApiError, bad_request


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    content = request.content
    if content.is_eof():
        # The whole body arrived with the head (nearly always): take it from the buffer.
        body = content.read_nowait()
        if len(body) > limit:
            raise _too_large(limit)
    else:
        try:
            body = await request.read()  # aiohttp enforces client_max_size (= the limit) here
        except web.RequestPayloadError:  # bad chunking or compression: the client's fault
            raise bad_request("request body is malformed (transfer or content encoding)") from None
    if not body:
        raise bad_request("request body is empty; expected a JSON object")
    return body
