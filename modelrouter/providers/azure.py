"""Azure OpenAI: OpenAI's Chat Completions body and stream on Azure's paths, key and errors.

- Dated API versions (https://learn.microsoft.com/en-us/azure/ai-services/openai/reference):
  `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...` with the
  key in an `api-key` header; the deployment (our model name) is in the path. The default
  version is `DEFAULT_API_VERSION`, the GA release of 2024-10-21, the first GA one whose spec
  has `stream_options` (older ones refuse it).
- `api_version: v1` (https://learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle):
  `POST {endpoint}/openai/v1/chat/completions`, no `api-version` query, the deployment name as
  the body's `model`.
- A response the content filter stopped ends with `finish_reason: content_filter`; a prompt it
  rejects is a 400 with `code: content_filter`
  (https://learn.microsoft.com/en-us/azure/ai-services/openai/concepts/content-filter), a
  client error like any 400. A deployment that does not exist is a 404 with
  `code: DeploymentNotFound`: another deployment of the group may serve the model.
- Embeddings (https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference#embeddings):
  `POST {endpoint}/openai/deployments/{deployment}/embeddings?api-version=...`, or
  `/openai/v1/embeddings` with the deployment as `model`; OpenAI's body and answer (the
  OpenAI-compatible mapping, `input` strings or token arrays, `dimensions`, `user`).
- A 429 may say how long to wait in `retry-after-ms` beside `Retry-After` (OpenAI's own SDKs
  read it first, `_parse_retry_after_header` in openai-python); the milliseconds are the finer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final
from urllib.parse import quote

from modelrouter.config import ProviderSettings
from modelrouter.events import UpstreamFailure
from modelrouter.providers.openai_compat import OpenAICompatAdapter, error_code
from modelrouter.schemas import Operation

DEFAULT_API_VERSION: Final = "2024-10-21"
V1: Final = "v1"  # the version-less API: /openai/v1 paths
MISSING_DEPLOYMENT: Final = "DeploymentNotFound"


class AzureAdapter(OpenAICompatAdapter):
    def __init__(self, settings: ProviderSettings) -> None:
        self.api_version = settings.api_version or DEFAULT_API_VERSION
        # The dated API names the deployment in the path; v1 in the body, like OpenAI.
        self.model_in_path = self.api_version != V1
        super().__init__(settings)

    def embed_endpoint(self, base_url: str) -> str | None:
        if self.api_version == V1:
            return f"{base_url}/openai/v1/embeddings"
        return f"{base_url}/openai/deployments"  # the deployment follows (`operation_path`)

    def endpoint(self, base_url: str) -> str:
        if self.api_version == V1:
            return f"{base_url}/openai/v1/chat/completions"
        return f"{base_url}/openai/deployments"

    def path(self, model: str, *, stream: bool) -> str:  # noqa: ARG002 - one URL for both
        if not self.model_in_path:
            return ""
        version = quote(self.api_version, safe="")
        return f"/{quote(model, safe='')}/chat/completions?api-version={version}"

    def operation_path(self, operation: Operation, model: str) -> str:  # noqa: ARG002 - embed only
        version = quote(self.api_version, safe="")
        return f"/{quote(model, safe='')}/embeddings?api-version={version}"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"api-key": api_key} if api_key else {}

    def retry_after(self, header: Callable[[str], str | None]) -> float | None:
        raw = header("retry-after-ms")
        if raw:
            try:
                millis = float(raw.strip())
            except ValueError:
                millis = math.nan
            if math.isfinite(millis):
                return max(0.0, millis / 1000)
        return super().retry_after(header)

    def failure(
        self, status: int, body: bytes, retry_after: float | None, redirect_to: str | None = None
    ) -> UpstreamFailure:
        if status == 404 and error_code(body) == MISSING_DEPLOYMENT:
            # This resource lacks the deployment; another one of the group may have it, and
            # this one is healthy.
            message = f"HTTP 404: {self.error_message(body)}"
            return UpstreamFailure("model_not_found", message, status=status)
        return super().failure(status, body, retry_after, redirect_to)
