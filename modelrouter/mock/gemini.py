"""The Gemini flavour: `POST /v1beta/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse` (GenerateContentResponse chunks, CRLF-framed SSE, the last one
with the finish reason and the usage). A call comes whole, in one part, with a thought
signature; errors are Google's `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from modelrouter.mock.flavours import _SLOT, Flavour, Reply, Script, _fill, _ids, _usage
from modelrouter.mock.text import DEFAULT_TOOL, ChatRequest, ChatRequestError, content_text

_encode = msgspec.json.Encoder().encode
# base64 with "/" and "=" in it (URL-safe base64 writes them otherwise): b"mock-signature\xfb\xff"
SIGNATURE = "bW9jay1zaWduYXR1cmX7/w=="
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_END = b"\r\n\r\n"


def _sse(obj: object) -> bytes:
    return b"data: " + _encode(obj) + _END


def _texts(content: object) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [content_text([part]) for part in parts or () if isinstance(part, dict)]


def _tool_name(tools: object) -> str:
    for tool in tools if isinstance(tools, list) else ():
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for declaration in declarations or ():
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                return str(declaration["name"])
    return DEFAULT_TOOL


class Gemini(Flavour):
    name = "gemini"
    supports_tools = True
    malformed_body = b'{"candidates": [{"content": '
    malformed_line = b'data: {"candidates": [\r\n\r\n'

    def parse(self, body: dict[str, Any], target: str = "") -> ChatRequest:
        parts = urlsplit(target)
        model, _, method = unquote(parts.path.rsplit("/", 1)[-1]).rpartition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            raise ChatRequestError("expected /v1beta/models/{model}:generateContent")
        stream = method == "streamGenerateContent"
        if stream and "alt=sse" not in parts.query.split("&"):
            raise ChatRequestError("the mock streams Server-Sent Events only: ask with alt=sse")
        contents = body.get("contents")
        if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
            raise ChatRequestError("'contents' must be a list of Content objects")
        texts = [" ".join(_texts(c)) for c in contents] + _texts(body.get("systemInstruction"))
        users = [" ".join(_texts(c)) for c in contents if c.get("role", "user") == "user"]
        return ChatRequest(
            model=model,
            stream=stream,
            include_usage=True,
            prompt_tokens=max(1, sum(len(t.split()) for t in texts)),
            last_user=users[-1] if users else "",
            tool_name=_tool_name(body.get("tools")),
        )

    def error_body(self, status: int, message: str) -> bytes:
        code = _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return _encode({"error": {"code": status, "message": message, "status": code}})

    def stream_error(self, message: str) -> bytes:
        return _sse({"error": {"code": 500, "message": message, "status": "INTERNAL"}})

    def complete(self, reply: Reply) -> bytes:
        parts = [self._call(reply)] if reply.tool_call else [{"text": reply.text}]
        return _encode(self._chunk(reply, parts, final=True))

    def script(self, reply: Reply) -> Script:
        if reply.tool_call:  # whole, in one chunk
            pieces = [_sse(self._chunk(reply, [self._call(reply)]))]
        else:
            slot = self._chunk(reply, [{"text": _SLOT}])
            pieces = _fill(b"data: ", slot, _END, reply.tokens)
        return Script(head=b"", pieces=pieces, tail=_sse(self._chunk(reply, [], final=True)))

    @staticmethod
    def _call(reply: Reply) -> dict[str, Any]:
        call = {"name": reply.chat.tool_name, "args": msgspec.json.decode(reply.text)}
        return {"functionCall": call, "thoughtSignature": SIGNATURE}

    @staticmethod
    def _chunk(reply: Reply, parts: list[Any], *, final: bool = False) -> dict[str, Any]:
        """A GenerateContentResponse; the model's strings first, so that a text slot is last."""
        chunk: dict[str, Any] = {
            "modelVersion": reply.chat.model,
            "responseId": f"mock-{next(_ids)}",
        }
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = "STOP"
            prompt, completion = _usage(reply)
            chunk["usageMetadata"] = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion,
            }
        return {**chunk, "candidates": [candidate]}


GEMINI = Gemini()
