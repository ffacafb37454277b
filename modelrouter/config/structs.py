"""The settings: typed, frozen structs whose field defaults are the documented defaults
(written once, here), and the providers the gateway knows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, get_args

import msgspec

from modelrouter.aliases import ModelAlias
from modelrouter.config.prices import Price

AdapterKind = Literal["openai", "ollama", "anthropic", "azure", "gemini"]
ADAPTER_KINDS: Final[tuple[AdapterKind, ...]] = ("openai", "anthropic", "ollama", "azure", "gemini")
Strategy = Literal["ordered", "weighted", "least-busy", "latency", "cost"]
STRATEGIES: Final[tuple[Strategy, ...]] = ("ordered", "weighted", "least-busy", "latency", "cost")


class ProviderDefaults(msgspec.Struct, frozen=True):
    kind: AdapterKind
    base_url: str
    model: str
    rate_limit: int | None  # None: RATE_LIMIT_REQUESTS_PER_MINUTE applies
    needs_key: bool


# The seed documents per-provider defaults for Groq (30/min), OpenRouter (20/min) and Ollama
# (100/min); providers it does not name fall back to RATE_LIMIT_REQUESTS_PER_MINUTE.
KNOWN_PROVIDERS: Final[Mapping[str, ProviderDefaults]] = {
    "groq": ProviderDefaults(
        "openai", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", 30, True
    ),
    "openrouter": ProviderDefaults(
        "openai", "https://openrouter.ai/api/v1", "meta-llama/llama-3.3-70b-instruct", 20, True
    ),
    "ollama": ProviderDefaults("ollama", "http://localhost:11434", "llama3.2", 100, False),
    "openai": ProviderDefaults("openai", "https://api.openai.com/v1", "gpt-4o-mini", None, True),
    "anthropic": ProviderDefaults(
        "anthropic", "https://api.anthropic.com", "claude-haiku-4-5", None, True
    ),
}
DEFAULT_ORDER: Final = "groq,openrouter,ollama"
LOOPBACK_NAMES: Final = frozenset({"localhost", "ip6-localhost"})
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"})
PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


Continuation = Literal["anthropic_prefill", "assistant_prefix", "none"]
CONTINUATIONS: Final[tuple[Continuation, ...]] = get_args(Continuation)


class ProviderSettings(msgspec.Struct, frozen=True):
    name: str
    kind: AdapterKind
    base_url: str
    model: str
    api_key: str | None
    rate_limit: int  # requests per minute; 0 means unlimited
    max_concurrency: int = 256  # <PROVIDER>_MAX_CONCURRENCY: attempts in flight
    max_connections: int = 256  # <PROVIDER>_MAX_CONNECTIONS: upstream sockets, active and idle
    proxy: str | None = None  # <PROVIDER>_PROXY: None follows HTTP(S)_PROXY/NO_PROXY, "" direct
    ca_bundle: str | None = None  # <PROVIDER>_CA_BUNDLE: the CAs this provider is verified with
    # kind azure: the `api-version` query; "v1" takes the /openai/v1 paths, None the adapter's
    # default (providers/azure.py). Set by the routing file; no environment variable reads it.
    api_version: str | None = None
    # Set by the routing file only (docs/routing.md); the defaults are what the environment's
    # providers have always done.
    models: dict[str, str] = {}  # the model groups it serves: group name -> upstream model
    weight: float = 1.0  # its share under the `weighted` strategy
    provider_timeout: float | None = None  # None: PROVIDER_TIMEOUT
    first_chunk_timeout: float | None = None  # None: FIRST_CHUNK_TIMEOUT
    connect_timeout: float | None = None  # None: CONNECT_TIMEOUT
    stream_options: bool = True  # False: streams ask no `stream_options` (servers that refuse it)
    from_file: bool = False  # declared in MODELROUTER_CONFIG (rather than by the environment)
    # <PROVIDER>_PROPAGATE_TRACE: each attempt's span context goes upstream as `traceparent`
    propagate_trace: bool = True
    # <PROVIDER>_CONTINUATION or `continuation:`: how it continues a cut stream's assistant
    # turn (providers/continuation.py); None: its kind's default
    continuation: Continuation | None = None
    # Set by the routing file only: tokens per minute (the request's token ceiling reserved
    # per attempt, settled on its usage) and streamed attempts in flight; 0: unlimited.
    tpm: int = 0
    max_parallel_streams: int = 0


class ModelGroup(msgspec.Struct, frozen=True):
    """A name clients ask for, served by every deployment that lists it, walked by `strategy`;
    then the groups in `fallbacks`, in turn."""

    name: str
    strategy: Strategy = "ordered"
    fallbacks: tuple[str, ...] = ()
    hedge: OptIn | None = None  # the routing file's `hedge:` for this group; None: HEDGE's


OptIn = Literal["off", "on", "allow"]  # allow: a request may ask for it with a header
OPT_INS: Final[tuple[OptIn, ...]] = ("off", "on", "allow")


class HedgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Hedged streams (see modelrouter.routing.hedging, docs/routing.md)."""

    mode: OptIn = "off"  # HEDGE
    after_ms: float | None = None  # HEDGE_AFTER_MS: a fixed delay; None: the deployment's p95
    default_after_ms: float = 1000.0  # the delay until a deployment has `min_samples`
    min_ms: float = 50.0  # HEDGE_MIN_MS: the p95 delay is never shorter
    max_extra: float = 0.1  # HEDGE_MAX_EXTRA: hedges as a share of recent streamed requests
    min_samples: int = 50  # first-byte samples before the p95 is trusted


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the Redis backend behaves (used only when REDIS_URL is set)."""

    key_prefix: str = "mr"  # REDIS_KEY_PREFIX: several deployments can share one Redis
    timeout: float = 0.25  # REDIS_TIMEOUT: the longest any request waits on Redis
    expected_replicas: int = 1  # REDIS_EXPECTED_REPLICAS: local limits = limit / this, degraded
    cluster: bool = False  # REDIS_CLUSTER: REDIS_URL names one node of a Redis Cluster
    max_connections: int = 64  # REDIS_MAX_CONNECTIONS: pool size per process


class UpstreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the gateway reaches its providers (see modelrouter.transport)."""

    http_proxy: str | None = None  # http_proxy / HTTP_PROXY: for http:// providers
    https_proxy: str | None = None  # https_proxy / HTTPS_PROXY: for https:// providers (CONNECT)
    no_proxy: tuple[str, ...] = ()  # no_proxy / NO_PROXY: hosts, .domains, *, IPs, CIDRs, :port
    ssl_cert_file: str | None = None  # SSL_CERT_FILE: replaces the system's CA certificates
    ssl_cert_dir: str | None = None  # SSL_CERT_DIR: a hashed directory of CA certificates
    max_body_bytes: int = 16 * 1024 * 1024  # MAX_UPSTREAM_BODY_BYTES, counted decompressed


CacheMode = Literal["off", "deterministic", "all"]
DATABASE_SCHEMES: Final = frozenset({"postgresql", "postgres"})


# key: each virtual key its own (the static API_KEY list is one scope); team: a virtual key's
# team (a key without a team: its own); global: every client shares.
CacheScope = Literal["key", "team", "global"]


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The response cache (see modelrouter.cache)."""

    mode: CacheMode = "off"  # CACHE_MODE: deterministic caches temperature 0 or a seed only
    ttl: float = 3600.0  # CACHE_TTL_SECONDS
    max_bytes: int = 64 * 1024 * 1024  # CACHE_MAX_BYTES: the in-memory store's budget
    max_value_bytes: int = 1024 * 1024  # CACHE_MAX_VALUE_BYTES: a larger answer is not stored
    key_user: bool = False  # CACHE_KEY_USER: the request's `user` is part of the key
    lock_seconds: float = 10.0  # CACHE_LOCK_SECONDS: the lease of a fleet-wide leader's lock
    scope: CacheScope = "key"  # CACHE_SCOPE: whose answers a cached answer serves

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class HistorySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Conversation history in PostgreSQL (used only when DATABASE_URL is set)."""

    store_content: bool = True  # HISTORY_STORE_CONTENT: keep the messages and the answer
    flush_seconds: float = 1.0  # HISTORY_FLUSH_SECONDS: the longest a row waits to be written
    batch_rows: int = 500  # HISTORY_BATCH_ROWS: a flush as soon as this many rows wait
    queue_rows: int = 10_000  # HISTORY_QUEUE_ROWS: then the oldest are dropped
    retention_days: int = 30  # HISTORY_RETENTION_DAYS: older rows are purged; 0 keeps all
    pool_size: int = 4  # HISTORY_POOL_SIZE: connections to PostgreSQL per process


class TenantSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Virtual keys, their admin API and prices (see modelrouter.tenants)."""

    admin_keys: tuple[str, ...] = ()  # ADMIN_API_KEY: the keys of /admin/*, and of nothing else
    key_cache_seconds: float = 30.0  # KEY_CACHE_SECONDS: a replica re-reads a known key this late
    prices_file: str | None = None  # PRICES_FILE: JSON prices extending the bundled table
    prices: dict[str, Price] = {}  # what PRICES_FILE holds, read and checked at start-up
    # Budgets (see modelrouter.tenants.budget): a budgeted key whose spend cannot be checked is
    # refused (BUDGET_FAIL_CLOSED), an unpriced model refused to budgeted keys unless allowed
    # (BUDGET_ALLOW_UNPRICED), and the output tokens reserved when a request sets no max_tokens.
    budget_fail_closed: bool = False
    budget_allow_unpriced: bool = False
    budget_reserve_tokens: int = 16_384
    metrics_key_labels: bool = False  # METRICS_KEY_LABELS: spend per key in /metrics
    # SPEND_RETENTION_DAYS: spend rows older become daily totals (tenants/spend_rollup.py); 0
    # keeps every row.
    spend_retention_days: int = 30
    # SPEND_FLUSH_SECONDS: the longest a spend row waits in memory before it is written (what a
    # kill loses); 1000 rows waiting are written at once.
    spend_flush_seconds: float = 1.0


TraceSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
TRACE_SAMPLERS: Final[tuple[TraceSampler, ...]] = get_args(TraceSampler)


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """OpenTelemetry traces (see modelrouter.observability.tracing), off unless an endpoint is
    set. The variables are OpenTelemetry's standard ones, read here like every other."""

    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces
    endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # OTEL_EXPORTER_OTLP_HEADERS: secrets, masked
    sampler: TraceSampler = "parentbased_always_on"  # OTEL_TRACES_SAMPLER
    sampler_arg: float = 1.0  # OTEL_TRACES_SAMPLER_ARG: the ratio of the *traceidratio samplers
    service_name: str = "modelrouter"  # OTEL_SERVICE_NAME
    capture_content: bool = False  # OTEL_CAPTURE_CONTENT: prompts in spans (else never)
    # The batch span processor (OTEL_BSP_*, the spec's defaults; durations in milliseconds):
    schedule_delay_ms: int = 5000  # OTEL_BSP_SCHEDULE_DELAY: the exporter wakes this often
    max_queue_size: int = 2048  # OTEL_BSP_MAX_QUEUE_SIZE: ended spans waiting; more are dropped
    max_export_batch_size: int = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE: spans per export
    export_timeout_ms: int = 30_000  # OTEL_BSP_EXPORT_TIMEOUT: an export, its retries included

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    redis_url: str | None = None
    redis: RedisSettings = RedisSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    provider_timeout: float = 30.0
    first_chunk_timeout: float = 3.0
    connect_timeout: float = 5.0  # CONNECT_TIMEOUT: TCP connect, proxy CONNECT and TLS handshake
    max_operation_timeout: float = 120.0
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    rate_limit_requests_per_minute: int = 60
    max_concurrent_streams: int = 10
    stream_lease_ttl: float = 30.0  # a stream's slot expires unless renewed (crashed replica)
    stream_lease_renew: float = 10.0  # how often a running stream renews its slot
    max_body_bytes: int = 1024 * 1024
    # Client connections and shutdown: each bounded (SECURITY.md, web/connections.py).
    header_timeout: float = 10.0  # HEADER_TIMEOUT_SECONDS: a request's head and body arrive within
    keepalive_timeout: float = 75.0  # KEEPALIVE_TIMEOUT_SECONDS: an idle connection is closed
    max_connections: int | None = None  # MAX_CONNECTIONS; None: from RLIMIT_NOFILE at start-up
    drain_seconds: float = 0.0  # DRAIN_SECONDS: /ready says 503, the listener stays open
    shutdown_timeout: float = 25.0  # SHUTDOWN_TIMEOUT_SECONDS: then in-flight requests are ended
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    log_flush_seconds: float = 0.1  # INFO/DEBUG lines may wait this long to go out together
    providers: tuple[ProviderSettings, ...] = ()
    skipped_providers: tuple[str, ...] = ()  # named in PROVIDER_ORDER but not enabled (no key)
    model_aliases: tuple[ModelAlias, ...] = ()  # MODEL_ALIASES, see modelrouter.aliases
    embedding_models: tuple[str, ...] = ()  # EMBEDDING_MODELS: marked in GET /v1/models
    routing_file: str | None = None  # MODELROUTER_CONFIG: the routing file (modelrouter.routing)
    model_groups: tuple[ModelGroup, ...] = ()  # the routing file's `models:`
    default_model: str | None = None  # the group `auto` names (the file's `default_model:`)
    replaced_providers: tuple[str, ...] = ()  # environment providers a file deployment replaced
    cache: CacheSettings = CacheSettings()
    database_url: str | None = None  # DATABASE_URL: history on when set
    history: HistorySettings = HistorySettings()
    tenants: TenantSettings = TenantSettings()
    tracing: TracingSettings = TracingSettings()
    hedge: HedgeSettings = HedgeSettings()
    continue_on_cut: OptIn = "off"  # CONTINUE_ON_CUT: continue a stream cut mid-text

    @property
    def auth_enabled(self) -> bool:
        """Whether requests may need a key: API_KEY, or virtual keys (DATABASE_URL; off
        loopback a request without a key is always refused, see web.auth)."""
        return bool(self.api_keys) or self.database_url is not None

    def provider(self, name: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == name), None)


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems
