"""Ollama's native chat API (`POST /api/chat`), NDJSON when streaming."""

from __future__ import annotations

from typing import Any

import msgspec

from modelrouter.events import Chunk, Done, Event, UpstreamFailure, Usage
from modelrouter.providers.base import Adapter, Completion, bad_response, decode, given, stop_list
from modelrouter.schemas import ChatRequest

_encode = msgspec.json.Encoder().encode


class _Message(msgspec.Struct):
    content: str = ""


class _Body(msgspec.Struct):
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: str | None = None


_decode = msgspec.json.Decoder(_Body).decode


def _parse(payload: bytes, what: str) -> _Body:
    body = decode(_decode, payload, what)
    if body.error is not None:
        raise UpstreamFailure("server_error", f"error from ollama: {body.error}")
    return body


def _format(request: ChatRequest) -> object:
    """Ollama's `format`: "json" for JSON mode, the JSON Schema itself for structured output."""
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema" and response_format.json_schema:
        return response_format.json_schema.get("schema", "json")
    return "json"


_OPTIONS = {
    "max_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class OllamaAdapter(Adapter):
    framing = "ndjson"
    capabilities = frozenset({"response_format", "seed", "presence_penalty", "frequency_penalty"})

    def endpoint(self, base_url: str) -> str:
        return f"{base_url}/api/chat"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        # Plain Ollama needs no key; hosted Ollama takes a Bearer token.
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        options = given(request, _OPTIONS)
        if request.stop is not None:
            options["stop"] = stop_list(request.stop)
        body: dict[str, Any] = {"model": model, "messages": request.messages, "stream": stream}
        if options:
            body["options"] = options
        response_format = _format(request)
        if response_format is not None:
            body["format"] = response_format
        return _encode(body)

    def map_response(self, body: bytes) -> Completion:
        parsed = _parse(body, "response body")
        if parsed.message is None:
            raise bad_response("response has no message")
        usage = Usage(parsed.prompt_eval_count, parsed.eval_count)
        return Completion(parsed.message.content, usage, parsed.done_reason or "stop")

    def map_chunk(self, payload: bytes) -> list[Event]:
        parsed = _parse(payload, "stream line")
        events: list[Event] = []
        if parsed.message is not None and parsed.message.content:
            events.append(Chunk(parsed.message.content))
        if parsed.done:
            events.append(Usage(parsed.prompt_eval_count, parsed.eval_count))
            events.append(Done(parsed.done_reason or "stop"))
        return events

    def error_message(self, body: bytes) -> str:
        try:
            parsed = _decode(body)
        except ValueError:
            return super().error_message(body)
        return parsed.error or super().error_message(body)
