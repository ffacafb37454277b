"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's formats, so its SDKs work unchanged.

Auth, routing, fallback, the stream cap and metrics are those of `/chat` and `/stream` (the
plumbing is shared in `web.chat`); only reading the request and writing the answer differ.
Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with the same statuses.
"""

from __future__ import annotations

import functools
import math

from aiohttp import web

from modelrouter.config import Settings
from modelrouter.errors import ApiError
from modelrouter.schemas import json_encoder
from modelrouter.web.auth import check_auth
from modelrouter.web.chat import collect, read_body, serve_stream, start_route
from modelrouter.web.middleware import Handler
from modelrouter.web.openai_format import OpenAIStream, completion_body, error_bytes
from modelrouter.web.openai_request import parse_completion_request
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, SUMMARY

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def openai_errors(handler: Handler) -> Handler:
    """Answer the handler's errors in OpenAI's shape (the middleware still counts them)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            kind = _HTTP_TYPES.get(exc.status, "http_error")
            return error_response(ApiError(exc.status, kind, exc.reason))

    return wrapped


def error_response(exc: ApiError) -> web.Response:
    response = web.Response(
        body=error_bytes(exc), status=exc.status, content_type="application/json"
    )
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="modelrouter"'
    return response


@openai_errors
async def chat_completions(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    parsed = parse_completion_request(await read_body(request, runtime))
    request_id = request[REQUEST_ID]
    if parsed.stream:
        fmt = OpenAIStream(request_id, include_usage=parsed.include_usage)
        return await serve_stream(request, runtime, parsed.chat, fmt)
    relay = start_route(request, runtime, parsed.chat, stream=False)
    answer = await collect(relay)
    request[SUMMARY].usage = answer.usage
    body = completion_body(
        relay,
        request_id=request_id,
        text=answer.text,
        tool_calls=answer.tool_calls,
        usage=answer.usage,
        finish_reason=answer.finish_reason,
    )
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"x-modelrouter-provider": relay.provider or ""},
    )


def served_models(settings: Settings) -> list[dict[str, object]]:
    """`auto`, each enabled provider's configured model as `provider/model`, then the aliases."""

    def entry(model_id: str, owner: str) -> dict[str, object]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}

    models = [entry("auto", "modelrouter")]
    models += [entry(f"{p.name}/{p.model}", p.name) for p in settings.providers]
    models += [entry(alias.name, "modelrouter") for alias in settings.model_aliases]
    return models


@openai_errors
async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    check_auth(request, runtime.api_keys)
    body = {"object": "list", "data": served_models(runtime.settings)}
    return web.Response(body=json_encoder.encode(body), content_type="application/json")


@openai_errors
async def get_model(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    check_auth(request, runtime.api_keys)
    wanted = request.match_info["model"]
    found = next((m for m in served_models(runtime.settings) if m["id"] == wanted), None)
    provider, _, model = wanted.partition("/")
    if found is None and model and runtime.settings.provider(provider) is not None:
        # Any model of an enabled provider routes, listed or not.
        found = {"id": wanted, "object": "model", "created": 0, "owned_by": provider}
    if found is not None:
        return web.Response(body=json_encoder.encode(found), content_type="application/json")
    raise ApiError(404, "model_not_found", f"model {wanted!r} is not served (see GET /v1/models)")
