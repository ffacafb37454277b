"""`POST /v1/messages`: Anthropic's Messages API, so its SDKs and Claude Code work unchanged.

Authentication by `x-api-key` (Anthropic's header) or `Authorization: Bearer` (Claude Code's
`ANTHROPIC_AUTH_TOKEN`); `anthropic-version` is accepted whatever it says (Anthropic has one).
`POST /v1/messages/count_tokens` is answered by the deployment that would serve the request,
when it counts (Anthropic's own endpoint); otherwise a 400 says counting is not available.
The request is routed as every other (`web.answers`): to an Anthropic deployment its body
goes as received, with only the model replaced; to another kind it is mapped
(`web.anthropic_request`). Errors are written in Anthropic's shape by the front middleware
(`web.errors.AnthropicErrors`) for every `/v1/messages` path.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from modelrouter.web.answers import response_headers, serve_stream, whole_answer
from modelrouter.web.anthropic_format import AnthropicStream, message_body
from modelrouter.web.anthropic_request import MessagesRequest, parse_messages_request
from modelrouter.web.auth import authenticate
from modelrouter.web.body import read_body
from modelrouter.web.operations import gather
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, SUMMARY, Runtime

_encode = msgspec.json.Encoder().encode


async def read_messages_request(
    request: web.Request, runtime: Runtime, *, counting: bool = False
) -> MessagesRequest:
    """Authenticate (`x-api-key`, else `Authorization: Bearer`) and read the body."""
    headers = request.headers
    key = headers.get("x-api-key")
    # aiohttp decodes header bytes with surrogateescape: encoding back gives the bytes sent.
    await authenticate(
        request, runtime, None if key is None else key.encode("utf-8", "surrogateescape")
    )
    body = await read_body(request, runtime.settings.max_body_bytes)
    return parse_messages_request(body, betas=headers.get("anthropic-beta", ""), counting=counting)


async def messages(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    parsed = await read_messages_request(request, runtime)
    request_id = request[REQUEST_ID]
    if parsed.stream:
        fmt = AnthropicStream(request_id, summary=request[SUMMARY])
        return await serve_stream(request, runtime, parsed.chat, fmt)
    answer = await whole_answer(request, runtime, parsed.chat)
    body = message_body(
        answer.answering,
        request_id=request_id,
        text=answer.text,
        tool_calls=answer.tool_calls,
        thinking=answer.thinking,
        usage=answer.usage,
        finish_reason=answer.finish_reason,
    )
    return web.Response(
        body=body,
        content_type="application/json",
        headers=response_headers(request[SUMMARY], answer.answering),
    )


async def count_tokens(request: web.Request) -> web.Response:
    """The request's input tokens, counted by the deployment that would answer it (a 400 when
    that one cannot count: never an estimate). Admitted and rate-limited as a request; free."""
    runtime = request.app[RUNTIME]
    parsed = await read_messages_request(request, runtime, counting=True)
    _, usage, answering = await gather(request, runtime, parsed.chat, free=True)
    return web.Response(
        body=_encode({"input_tokens": usage.prompt_tokens}),
        content_type="application/json",
        headers={"x-modelrouter-provider": answering.provider},
    )
