"""`POST /chat` (whole answer as JSON) and `POST /stream` (SSE), the seed's two routes."""

from __future__ import annotations

import msgspec
from aiohttp import web

from modelrouter.errors import bad_request
from modelrouter.schemas import (
    ChatRequest,
    ChatResponse,
    ProviderMeta,
    chat_request_decoder,
    json_encoder,
)
from modelrouter.tenants.cost import usd
from modelrouter.web.answers import response_headers, serve_stream, whole_answer
from modelrouter.web.auth import authenticate
from modelrouter.web.body import read_body
from modelrouter.web.nesting import check_nesting, deep_parameter
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, SUMMARY, Runtime
from modelrouter.web.sse import SeedStream


async def read_request(request: web.Request, runtime: Runtime) -> ChatRequest:
    await authenticate(request, runtime)
    body = await read_body(request, runtime.settings.max_body_bytes)
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


async def chat(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    answer = await whole_answer(request, runtime, await read_request(request, runtime))
    usage, answering = answer.usage, answer.answering
    cost = request[SUMMARY].cost
    meta = ProviderMeta(
        usage.total_tokens,
        usage.prompt_tokens,
        usage.completion_tokens,
        None if cost is None else usd(cost.nanos),
    )
    body = ChatResponse(
        answer.text,
        answering.provider,
        answering.model,
        meta,
        request[REQUEST_ID],
        answering.attempt,
    )
    return web.Response(
        body=json_encoder.encode(body),
        content_type="application/json",
        headers=response_headers(request[SUMMARY], answering),
    )


async def stream(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    chat_request = await read_request(request, runtime)
    return await serve_stream(request, runtime, chat_request, SeedStream(request[REQUEST_ID]))
