"""Google Gemini's native API: `generateContent`, and `streamGenerateContent?alt=sse` (SSE).

Sources: https://ai.google.dev/api (the `x-goog-api-key` header, the two methods),
https://ai.google.dev/api/rest/v1beta/models/generateContent and .../streamGenerateContent (the
request: contents, tools, toolConfig, systemInstruction, generationConfig; a stream of
GenerateContentResponse), the FinishReason values as listed for Vertex AI
(https://cloud.google.com/vertex-ai/generative-ai/docs/reference/nodejs/latest/vertexai/finishreason),
UsageMetadata and FunctionDeclaration as the Gen AI SDK documents them
(https://googleapis.github.io/js-genai/release_docs/classes/types.GenerateContentResponseUsageMetadata.html,
.../interfaces/types.FunctionDeclaration.html), https://ai.google.dev/gemini-api/docs/thought-signatures
and https://ai.google.dev/gemini-api/docs/troubleshooting (error statuses); embeddings in
`gemini_embed` (https://ai.google.dev/api/embeddings#method:-models.batchembedcontents).

- `POST {base}/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`,
  the key in `x-goog-api-key`. The model and the method are in the path: no `model` or `stream`
  in the body (request side: `gemini_request`).
- A stream has no end marker: its last chunk carries the candidate's `finishReason`, which ends
  it here. A call is a `functionCall` part; the finish reason after a call is STOP, said here as
  `tool_calls`. Thought summaries (`thought: true` parts) are not relayed.
- `promptTokenCount` already holds `cachedContentTokenCount`; thoughts are output.
- A prompt the safety system blocks has no candidate but `promptFeedback.blockReason`: a client
  error (400), as for an HTTP 400. An invalid key is a 400 with reason API_KEY_INVALID, and
  FAILED_PRECONDITION (no free tier in the region, billing off) or 402 (prepaid credit spent)
  are the deployment's configuration: `auth_error`. A 429's wait may be in the body's RetryInfo.
- Gemini 3 wants each call's `thoughtSignature` back with the call (else a 400). It travels in the
  tool call's id (`<id>__thought__<signature, URL-safe>`), which OpenAI clients send back as is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import msgspec

from modelrouter.events import Chunk, Done, Event, Finish, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers.base import (
    Adapter,
    Completion,
    Refusal,
    bad_response,
    decode,
    requested_features,
)
from modelrouter.providers.gemini_embed import batch_body, batch_vectors
from modelrouter.providers.gemini_request import (
    SIGNATURE_MARK,
    request_body,
    request_refusals,
)
from modelrouter.schemas import ChatRequest, EmbedChat, Operation

_encode = msgspec.json.Encoder().encode

FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"),
        "content_filter",
    ),
}  # the rest (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, newer ones) have no OpenAI name: stop


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] = {}
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False  # a thought summary: not part of the answer
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0  # cachedContentTokenCount is a part of it, not added again
    cached_content_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0  # billed as output

    def usage(self) -> Usage:
        prompt = self.prompt_token_count + self.tool_use_prompt_token_count
        thoughts = max(self.thoughts_token_count, 0)
        cached = min(max(self.cached_content_token_count, 0), max(prompt, 0))
        return Usage(
            prompt,
            self.candidates_token_count + thoughts,
            cached_input=cached,
            reasoning=thoughts,
        )


class _Feedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _Error(msgspec.Struct):
    code: int | None = None
    message: str = ""
    status: str = ""
    details: list[Any] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] | None = None
    prompt_feedback: _Feedback | None = None
    usage_metadata: _Usage | None = None
    response_id: str = ""
    error: _Error | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error


_decode_response = msgspec.json.Decoder(_Response).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def _failure(error: _Error) -> UpstreamFailure:
    """An error object where an answer was expected."""
    limited = error.code == 429 or error.status == "RESOURCE_EXHAUSTED"
    kind = f"{error.status}: " if error.status else ""
    text = f"error from upstream: {kind}{error.message}"
    return UpstreamFailure("rate_limited" if limited else "server_error", text)


def _candidate(parsed: _Response) -> _Candidate | None:
    """The first candidate; an error or a blocked prompt raises."""
    if parsed.error is not None:
        raise _failure(parsed.error)
    if parsed.candidates:
        return parsed.candidates[0]
    feedback = parsed.prompt_feedback
    if feedback is not None and feedback.block_reason:
        reason = feedback.block_reason
        raise UpstreamFailure(None, f"Gemini blocked the prompt ({reason})", status=400)
    return None


def _finish(reason: str, *, called: bool) -> str:
    finish = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called and finish == "stop" else finish


class _Stream:
    """Maps the chunks of one answer (whole: one chunk), numbering its calls across chunks."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload: bytes) -> list[Event]:
        return self.events(decode(_decode_response, payload, "stream event"))

    def events(self, parsed: _Response) -> list[Event]:
        candidate = _candidate(parsed)
        events: list[Event] = []
        content = candidate.content if candidate is not None else None
        for part in content.parts if content is not None else ():
            if part.function_call is not None:
                events.append(_call(part, part.function_call, self.calls, parsed.response_id))
                self.calls += 1
            elif part.text and not part.thought:
                events.append(Chunk(part.text))
        if parsed.usage_metadata is not None:
            events.append(parsed.usage_metadata.usage())
        if candidate is not None and candidate.finish_reason:
            finish = _finish(candidate.finish_reason, called=self.calls > 0)
            events += (Finish(finish), Done(finish))
        return events


def _call(part: _Part, call: _FunctionCall, index: int, response_id: str) -> ToolCallDelta:
    """A call, whole, with an id: Gemini's own if it sent one, else one derived from the answer
    and the call; its thought signature (URL-safe base64) rides along after SIGNATURE_MARK."""
    arguments = _encode(call.args).decode()
    call_id = call.id or _call_id(response_id, index, call.name, arguments)
    if part.thought_signature:
        safe = part.thought_signature.replace("+", "-").replace("/", "_").rstrip("=")
        call_id += SIGNATURE_MARK + safe
    return ToolCallDelta(index, call_id, call.name, arguments)


def _call_id(response_id: str, index: int, name: str, arguments: str) -> str:
    seed = f"{response_id}\x00{index}\x00{name}\x00{arguments}".encode()
    return "call_" + hashlib.blake2b(seed, digest_size=12).hexdigest()


def _retry_delay(details: list[Any]) -> float | None:
    """RetryInfo's `retryDelay` ("37s", "1.5s") from an error's details."""
    for detail in details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            if math.isfinite(seconds):
                return max(0.0, seconds)
    return None


def _error_reasons(error: _Error) -> set[str]:
    return {d.get("reason", "") for d in error.details if isinstance(d, dict)}


class GeminiAdapter(Adapter):
    framing = "sse"
    capabilities = frozenset(
        {
            "tools",
            "tool_choice",
            "parallel_tool_calls",  # true, its default; see unsupported
            "response_format",
            "seed",
            "presence_penalty",
            "frequency_penalty",
        }
    )
    model_in_path = True
    embed_fields = frozenset({"dimensions"})  # as outputDimensionality; no token arrays

    def endpoint(self, base_url: str) -> str:
        return f"{base_url}/v1beta/models"

    def path(self, model: str, *, stream: bool) -> str:
        name = model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/{quote(name, safe='')}:{method}"

    def embed_endpoint(self, base_url: str) -> str | None:
        return f"{base_url}/v1beta/models"  # the model and method follow (`operation_path`)

    def operation_path(self, operation: Operation, model: str) -> str:  # noqa: ARG002 - embed only
        return f"/{quote(model.removeprefix('models/'), safe='')}:batchEmbedContents"

    def map_embed_request(self, request: EmbedChat, model: str) -> bytes:
        return batch_body(request, model)

    def map_embed_response(self, body: bytes) -> tuple[list[list[float]], Usage]:
        return batch_vectors(body)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def unsupported(self, request: ChatRequest, features: list[str] | None = None) -> list[Refusal]:
        if features is None:
            features = requested_features(request)
        return super().unsupported(request, features) + request_refusals(request, features)

    def map_request(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:  # noqa: ARG002
        return _encode(request_body(request))

    def map_response(self, body: bytes) -> Completion:
        parsed = decode(_decode_response, body, "response body")
        if _candidate(parsed) is None:
            raise bad_response("response has no candidates")
        events = _Stream().events(parsed)
        text = "".join(event.text for event in events if isinstance(event, Chunk))
        calls = [event for event in events if isinstance(event, ToolCallDelta)]
        usage = next((event for event in events if isinstance(event, Usage)), Usage())
        finish = next((event.reason for event in events if isinstance(event, Finish)), None)
        return Completion(text, usage, finish or ("tool_calls" if calls else "stop"), calls)

    def map_chunk(self, payload: bytes) -> list[Event]:
        return _Stream()(payload)

    def stream_mapper(self) -> Callable[[bytes], list[Event]]:
        return _Stream()

    def error_text(self, body: bytes) -> str | None:
        try:
            error = _decode_error(body).error
        except ValueError:
            return None
        return error.message or None

    def failure(
        self, status: int, body: bytes, retry_after: float | None, redirect_to: str | None = None
    ) -> UpstreamFailure:
        try:
            error: _Error | None = _decode_error(body).error
        except ValueError:
            error = None
        if error is not None:
            configuration = error.status == "FAILED_PRECONDITION"
            if configuration or "API_KEY_INVALID" in _error_reasons(error):
                # Not the request's fault: this deployment's key, region or billing.
                message = f"HTTP {status}: {self.error_message(body)}"
                return UpstreamFailure("auth_error", message, status=status)
            if status == 429 and retry_after is None:
                retry_after = _retry_delay(error.details)
        if status == 402:  # prepaid credit spent: every key of the billing account stops
            message = f"HTTP 402: {self.error_message(body)}"
            return UpstreamFailure("auth_error", message, status=status)
        return super().failure(status, body, retry_after, redirect_to)
