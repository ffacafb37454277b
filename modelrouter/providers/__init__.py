"""Provider adapters: one small module per wire format, chosen by a provider's `kind`."""

from modelrouter.config import ProviderSettings
from modelrouter.providers.anthropic import AnthropicAdapter
from modelrouter.providers.azure import AzureAdapter
from modelrouter.providers.base import (
    Adapter,
    Completion,
    Refusal,
    classify_status,
    parse_retry_after,
    requested_features,
)
from modelrouter.providers.gemini import GeminiAdapter
from modelrouter.providers.ollama import OllamaAdapter
from modelrouter.providers.openai_compat import OpenAICompatAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAICompatAdapter,
    "ollama": OllamaAdapter,
    "anthropic": AnthropicAdapter,
    "azure": AzureAdapter,
    "gemini": GeminiAdapter,
}


def build_adapter(settings: ProviderSettings) -> Adapter:
    return ADAPTERS[settings.kind](settings)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AnthropicAdapter",
    "AzureAdapter",
    "Completion",
    "GeminiAdapter",
    "OllamaAdapter",
    "OpenAICompatAdapter",
    "Refusal",
    "build_adapter",
    "classify_status",
    "parse_retry_after",
    "requested_features",
]
