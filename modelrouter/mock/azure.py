"""The Azure OpenAI flavour: OpenAI's bodies with Azure's filter annotations, codes and headers.

Served on `/openai/deployments/{deployment}/chat/completions` (dated API versions) and
`/openai/v1/chat/completions`. A stream opens with a chunk of prompt filter results and no
choices, as Azure's does; a 404 is `DeploymentNotFound`; a 429 says how long to wait in both
`Retry-After` and `retry-after-ms`.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from modelrouter.mock.flavours import OpenAI, Reply, Script, _sse

_encode = msgspec.json.Encoder().encode
_FILTERS = {
    kind: {"filtered": False, "severity": "safe"}
    for kind in ("hate", "self_harm", "sexual", "violence")
}
_PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": _FILTERS}]
_PROMPT_CHUNK = _sse(
    {"id": "", "object": "", "created": 0, "model": "", "choices": []}
    | {"prompt_filter_results": _PROMPT_FILTERS}
)
_CODES = {401: "401", 403: "403", 404: "DeploymentNotFound", 429: "429", 400: "BadRequest"}


class Azure(OpenAI):
    name = "azure"

    def error_body(self, status: int, message: str) -> bytes:
        code = _CODES.get(status, "InternalServerError" if status >= 500 else str(status))
        return _encode({"error": {"code": code, "message": message}})

    def retry_headers(self, value: str) -> dict[str, str]:
        headers = super().retry_headers(value)
        try:
            seconds = float(value)
        except ValueError:
            return headers  # an HTTP-date: Retry-After alone
        if math.isfinite(seconds):
            headers["retry-after-ms"] = str(round(seconds * 1000))
        return headers

    def complete(self, reply: Reply) -> bytes:
        body: dict[str, Any] = msgspec.json.decode(super().complete(reply))
        body["prompt_filter_results"] = _PROMPT_FILTERS
        return _encode(body)

    def script(self, reply: Reply) -> Script:
        script = super().script(reply)
        return Script(head=_PROMPT_CHUNK + script.head, pieces=script.pieces, tail=script.tail)


AZURE = Azure()
