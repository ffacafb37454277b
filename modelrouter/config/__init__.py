"""Configuration from the environment: typed, validated at start-up, all problems listed at once.

- `structs`: the settings and their defaults (written once), the known providers;
- `load`: `load_settings(env)` and `variables()`;
- `reader`, `network`: reading values, and checking what reaches the network;
- `masking`: `describe` (the configuration with secrets masked) and `secrets_of`.
"""

from modelrouter.config.load import load_settings, variables
from modelrouter.config.masking import describe, mask, mask_url, secrets_of, upstream_secrets
from modelrouter.config.prices import Price
from modelrouter.config.reader import is_loopback
from modelrouter.config.structs import (
    ADAPTER_KINDS,
    DEFAULT_ORDER,
    KNOWN_PROVIDERS,
    STRATEGIES,
    AdapterKind,
    CacheMode,
    CacheScope,
    CacheSettings,
    ConfigError,
    HistorySettings,
    ModelGroup,
    ProviderDefaults,
    ProviderSettings,
    RedisSettings,
    Settings,
    Strategy,
    TenantSettings,
    TraceSampler,
    TracingSettings,
    UpstreamSettings,
)

__all__ = [
    "ADAPTER_KINDS",
    "DEFAULT_ORDER",
    "KNOWN_PROVIDERS",
    "STRATEGIES",
    "AdapterKind",
    "CacheMode",
    "CacheScope",
    "CacheSettings",
    "ConfigError",
    "HistorySettings",
    "ModelGroup",
    "Price",
    "ProviderDefaults",
    "ProviderSettings",
    "RedisSettings",
    "Settings",
    "Strategy",
    "TenantSettings",
    "TraceSampler",
    "TracingSettings",
    "UpstreamSettings",
    "describe",
    "is_loopback",
    "load_settings",
    "mask",
    "mask_url",
    "secrets_of",
    "upstream_secrets",
    "variables",
]
