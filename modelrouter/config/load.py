"""`load_settings`: the settings from the environment, every problem listed at once; and
`variables`: every variable that reads, with its default (the docs are tested against it)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from modelrouter.aliases import ModelAlias, parse_aliases
from modelrouter.config.network import (
    ca_dir,
    ca_file,
    check_provider_headers,
    check_redis_url,
    checked_url,
    http_url,
    lower_first,
    provider_proxy,
    proxy,
)
from modelrouter.config.prices import read_prices
from modelrouter.config.reader import Reader, bounded, flag, is_loopback, port, split, within
from modelrouter.config.structs import (
    CONTINUATIONS,
    DATABASE_SCHEMES,
    DEFAULT_ORDER,
    KNOWN_PROVIDERS,
    OPT_INS,
    PREFIX_RE,
    CacheScope,
    CacheSettings,
    ConfigError,
    Continuation,
    HedgeSettings,
    HistorySettings,
    OptIn,
    ProviderSettings,
    RedisSettings,
    Settings,
    TenantSettings,
    UpstreamSettings,
)
from modelrouter.config.tracing import read_tracing


def _providers(
    reader: Reader, global_rpm: int
) -> tuple[tuple[ProviderSettings, ...], tuple[str, ...]]:
    order = split(reader.raw("PROVIDER_ORDER", DEFAULT_ORDER) or DEFAULT_ORDER)
    enabled: list[ProviderSettings] = []
    skipped: list[str] = []
    for name in order:
        defaults = KNOWN_PROVIDERS.get(name)
        if defaults is None:
            known = ", ".join(KNOWN_PROVIDERS)
            reader.problems.append(
                f"PROVIDER_ORDER names unknown provider {name!r} (known: {known})"
            )
            continue
        if name in (p.name for p in enabled) or name in skipped:
            reader.problems.append(f"PROVIDER_ORDER names {name!r} twice")
            continue
        prefix = name.upper()
        key = reader.raw(f"{prefix}_API_KEY")
        settings = ProviderSettings(
            name=name,
            kind=defaults.kind,
            base_url=http_url(reader, f"{prefix}_BASE_URL", defaults.base_url),
            model=reader.raw(f"{prefix}_MODEL", defaults.model) or defaults.model,
            api_key=key,
            rate_limit=reader.integer(f"{prefix}_RATE_LIMIT", defaults.rate_limit or global_rpm),
            max_concurrency=reader.integer(
                f"{prefix}_MAX_CONCURRENCY", _PROVIDER.max_concurrency, minimum=1
            ),
            max_connections=reader.integer(
                f"{prefix}_MAX_CONNECTIONS", _PROVIDER.max_connections, minimum=1
            ),
            proxy=provider_proxy(reader, f"{prefix}_PROXY"),
            ca_bundle=ca_file(reader, f"{prefix}_CA_BUNDLE"),
            propagate_trace=reader.get(
                f"{prefix}_PROPAGATE_TRACE", _PROVIDER.propagate_trace, flag, FLAG_RULE
            ),
            continuation=_continuation(reader, prefix, defaults.kind),
        )
        check_provider_headers(reader, prefix, settings)
        if defaults.needs_key and key is None:
            skipped.append(name)
        else:
            enabled.append(settings)
    return tuple(enabled), tuple(skipped)


def _aliases(reader: Reader, providers: tuple[ProviderSettings, ...]) -> tuple[ModelAlias, ...]:
    models = {p.name: p.model for p in providers}
    text = reader.raw("MODEL_ALIASES") or ""
    aliases, problems = parse_aliases(text, known=KNOWN_PROVIDERS, models=models)
    reader.problems += problems
    return aliases


# The defaults, written once: in the structs above. Reading them from instances keeps
# `load_settings` and the documentation check (`variables`) from repeating them.
_DEFAULTS: Final = Settings()
_REDIS: Final = RedisSettings()
_PROVIDER: Final = ProviderSettings("", "openai", "", "", None, 0)
_CACHE: Final = CacheSettings()
_HISTORY: Final = HistorySettings()
_TENANTS: Final = TenantSettings()
_HEDGE: Final = HedgeSettings()
FLAG_RULE: Final = "a flag (1/0, true/false)"
MIN_ADMIN_KEY_CHARS: Final = 16  # an admin key mints client keys: no short, guessable ones
VIRTUAL_KEY_PREFIX: Final = (
    "mr-"  # modelrouter.tenants.secrets.PREFIX (config imports nothing above it)
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment) or raise ConfigError."""
    reader = Reader(os.environ if env is None else env)
    settings = _load(reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def variables() -> dict[str, object]:
    """Every environment variable the configuration reads, with its default (None: unset)."""
    reader = Reader({"PROVIDER_ORDER": ",".join(KNOWN_PROVIDERS)})
    _load(reader)
    return reader.read


def _load(r: Reader) -> Settings:
    d = _DEFAULTS
    global_rpm = r.integer("RATE_LIMIT_REQUESTS_PER_MINUTE", d.rate_limit_requests_per_minute)
    providers, skipped = _providers(r, global_rpm)
    log_format = r.raw("LOG_FORMAT", d.log_format) or d.log_format
    if log_format not in ("json", "console"):
        r.problems.append(f"LOG_FORMAT={log_format!r} is not json or console")
        log_format = "json"
    log_level = (r.raw("LOG_LEVEL", d.log_level) or d.log_level).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        r.problems.append(f"LOG_LEVEL={log_level!r} is not a log level")
    settings = Settings(
        host=r.raw("HOST", d.host) or d.host,
        port=r.get("PORT", d.port, port, "a TCP port (1-65535)"),
        api_keys=split(r.raw("API_KEY") or ""),
        redis_url=r.raw("REDIS_URL"),
        redis=_redis(r),
        upstream=_upstream(r),
        provider_timeout=r.number("PROVIDER_TIMEOUT", d.provider_timeout, minimum=0.001),
        first_chunk_timeout=r.number("FIRST_CHUNK_TIMEOUT", d.first_chunk_timeout, minimum=0.001),
        connect_timeout=r.seconds(
            "CONNECT_TIMEOUT", d.connect_timeout, minimum=0.001, maximum=3600
        ),
        max_operation_timeout=r.number(
            "MAX_OPERATION_TIMEOUT", d.max_operation_timeout, minimum=0.001
        ),
        backoff_base_seconds=r.number("BACKOFF_BASE_SECONDS", d.backoff_base_seconds),
        backoff_max_seconds=r.number("BACKOFF_MAX_SECONDS", d.backoff_max_seconds),
        rate_limit_requests_per_minute=global_rpm,
        max_concurrent_streams=r.integer(
            "MAX_CONCURRENT_STREAMS", d.max_concurrent_streams, minimum=1
        ),
        stream_lease_ttl=r.number("STREAM_LEASE_TTL_SECONDS", d.stream_lease_ttl, minimum=0.1),
        stream_lease_renew=r.number(
            "STREAM_LEASE_RENEW_SECONDS", d.stream_lease_renew, minimum=0.05
        ),
        max_body_bytes=r.integer("MAX_BODY_BYTES", d.max_body_bytes, minimum=1024),
        header_timeout=r.seconds(
            "HEADER_TIMEOUT_SECONDS", d.header_timeout, minimum=0.05, maximum=3600
        ),
        keepalive_timeout=r.seconds(
            "KEEPALIVE_TIMEOUT_SECONDS", d.keepalive_timeout, minimum=0.05, maximum=3600
        ),
        max_connections=r.get(
            "MAX_CONNECTIONS", d.max_connections, bounded(int, 1), "an integer >= 1"
        ),
        drain_seconds=r.seconds("DRAIN_SECONDS", d.drain_seconds, minimum=0, maximum=3600),
        shutdown_timeout=r.seconds(
            "SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout, minimum=0, maximum=3600
        ),
        log_level=log_level,
        log_format="console" if log_format == "console" else "json",
        log_flush_seconds=r.number("LOG_FLUSH_SECONDS", d.log_flush_seconds),
        providers=providers,
        skipped_providers=skipped,
        model_aliases=_aliases(r, providers),
        embedding_models=tuple(
            name.strip() for name in (r.raw("EMBEDDING_MODELS") or "").split(",") if name.strip()
        ),
        routing_file=r.raw("MODELROUTER_CONFIG"),  # read by modelrouter.routing.load_settings
        cache=_cache(r),
        database_url=r.raw("DATABASE_URL"),
        history=_history(r),
        tenants=_tenants(r),
        tracing=read_tracing(r),
        hedge=_hedge(r),
        continue_on_cut=opt_in(r, "CONTINUE_ON_CUT", d.continue_on_cut),
    )
    if settings.backoff_max_seconds < settings.backoff_base_seconds:
        r.problems.append("BACKOFF_MAX_SECONDS must be >= BACKOFF_BASE_SECONDS")
    if settings.redis_url is not None:
        check_redis_url(r, settings.redis_url)
    if settings.database_url is not None:
        checked_url(r, "DATABASE_URL", settings.database_url, tuple(sorted(DATABASE_SCHEMES)))
    if settings.stream_lease_renew >= settings.stream_lease_ttl:
        r.problems.append("STREAM_LEASE_RENEW_SECONDS must be < STREAM_LEASE_TTL_SECONDS")
    if set(settings.tenants.admin_keys) & set(settings.api_keys):
        r.problems.append("ADMIN_API_KEY and API_KEY share a key: an admin key is not a client key")
    if not settings.auth_enabled and not is_loopback(settings.host):
        r.problems.append(
            f"API_KEY and DATABASE_URL are unset while HOST={settings.host} is not a loopback "
            "address: refusing to serve without authentication"
        )
    return settings


def _redis(r: Reader) -> RedisSettings:
    d = _REDIS
    prefix = r.raw("REDIS_KEY_PREFIX", d.key_prefix) or d.key_prefix
    if not PREFIX_RE.fullmatch(prefix):
        r.problems.append(f"REDIS_KEY_PREFIX={prefix!r} is not letters, digits, '_', '-', '.', ':'")
    return RedisSettings(
        key_prefix=prefix,
        timeout=r.number("REDIS_TIMEOUT", d.timeout, minimum=0.001),
        expected_replicas=r.integer("REDIS_EXPECTED_REPLICAS", d.expected_replicas, minimum=1),
        cluster=r.get("REDIS_CLUSTER", d.cluster, flag, "a flag (1/0, true/false)"),
        max_connections=r.integer("REDIS_MAX_CONNECTIONS", d.max_connections, minimum=2),
    )


def _cache(r: Reader) -> CacheSettings:
    d = _CACHE
    mode = r.raw("CACHE_MODE", d.mode) or d.mode
    if mode not in ("off", "deterministic", "all"):
        r.problems.append(f"CACHE_MODE={mode!r} is not off, deterministic or all")
        mode = d.mode
    cache = CacheSettings(
        mode="all" if mode == "all" else "deterministic" if mode == "deterministic" else "off",
        ttl=r.number("CACHE_TTL_SECONDS", d.ttl, minimum=1.0),
        max_bytes=r.integer("CACHE_MAX_BYTES", d.max_bytes, minimum=1024),
        max_value_bytes=r.integer("CACHE_MAX_VALUE_BYTES", d.max_value_bytes, minimum=1024),
        key_user=r.get("CACHE_KEY_USER", d.key_user, flag, "a flag (1/0, true/false)"),
        lock_seconds=r.number("CACHE_LOCK_SECONDS", d.lock_seconds, minimum=0.1),
        scope=_cache_scope(r),
    )
    if cache.max_value_bytes > cache.max_bytes:
        r.problems.append("CACHE_MAX_VALUE_BYTES must be <= CACHE_MAX_BYTES")
    return cache


def _cache_scope(r: Reader) -> CacheScope:
    scope = (r.raw("CACHE_SCOPE", _CACHE.scope) or _CACHE.scope).lower()
    if scope == "team":
        return "team"
    if scope == "global":
        return "global"
    if scope != "key":
        r.problems.append(f"CACHE_SCOPE={scope!r} is not key, team or global")
    return "key"


def _history(r: Reader) -> HistorySettings:
    d = _HISTORY
    rule = "a flag (1/0, true/false)"
    # A HISTORY_QUEUE_ROWS below HISTORY_BATCH_ROWS is accepted: the writer's batch is then
    # the whole queue (setting the bound alone must not require lowering the batch too).
    return HistorySettings(
        store_content=r.get("HISTORY_STORE_CONTENT", d.store_content, flag, rule),
        flush_seconds=r.number("HISTORY_FLUSH_SECONDS", d.flush_seconds, minimum=0.01),
        batch_rows=r.integer("HISTORY_BATCH_ROWS", d.batch_rows, minimum=1),
        queue_rows=r.integer("HISTORY_QUEUE_ROWS", d.queue_rows, minimum=1),
        retention_days=r.integer("HISTORY_RETENTION_DAYS", d.retention_days),
        pool_size=r.integer("HISTORY_POOL_SIZE", d.pool_size, minimum=1),
    )


def _tenants(r: Reader) -> TenantSettings:
    d = _TENANTS
    admin_keys = split(r.raw("ADMIN_API_KEY") or "")
    for index, key in enumerate(admin_keys, 1):
        if len(key) < MIN_ADMIN_KEY_CHARS or not key.isascii() or not key.isprintable():
            r.problems.append(
                f"ADMIN_API_KEY: key {index} must be at least {MIN_ADMIN_KEY_CHARS} printable "
                "ASCII characters (value not shown)"
            )
        elif key.startswith(VIRTUAL_KEY_PREFIX):  # then no virtual key can ever be one
            r.problems.append(
                f"ADMIN_API_KEY: key {index} starts with {VIRTUAL_KEY_PREFIX!r}, the prefix of "
                "virtual (client) keys: an admin key is not a client key"
            )
    prices_file, prices = read_prices(r, "PRICES_FILE")
    return TenantSettings(
        admin_keys=admin_keys,
        key_cache_seconds=r.seconds(
            "KEY_CACHE_SECONDS", d.key_cache_seconds, minimum=0.1, maximum=3600
        ),
        prices_file=prices_file,
        prices=prices,
        budget_fail_closed=r.get("BUDGET_FAIL_CLOSED", d.budget_fail_closed, flag, FLAG_RULE),
        budget_allow_unpriced=r.get(
            "BUDGET_ALLOW_UNPRICED", d.budget_allow_unpriced, flag, FLAG_RULE
        ),
        budget_reserve_tokens=r.integer(
            "BUDGET_RESERVE_TOKENS", d.budget_reserve_tokens, minimum=1
        ),
        metrics_key_labels=r.get("METRICS_KEY_LABELS", d.metrics_key_labels, flag, FLAG_RULE),
        spend_retention_days=r.integer("SPEND_RETENTION_DAYS", d.spend_retention_days),
        spend_flush_seconds=r.seconds(
            "SPEND_FLUSH_SECONDS", d.spend_flush_seconds, minimum=0.01, maximum=86_400
        ),
    )


def _continuation(r: Reader, prefix: str, kind: str) -> Continuation:
    """How the provider continues a cut stream (providers/continuation.py)."""
    default: Continuation = "anthropic_prefill" if kind == "anthropic" else "none"
    name = f"{prefix}_CONTINUATION"
    text = (r.raw(name, default) or default).lower()
    for mode in CONTINUATIONS:
        if text == mode:
            return mode
    r.problems.append(f"{name}={text!r} is not one of {', '.join(CONTINUATIONS)}")
    return default


def opt_in(r: Reader, name: str, default: OptIn) -> OptIn:
    """off, on or allow (a request may ask for it)."""
    text = (r.raw(name, default) or default).lower()
    for mode in OPT_INS:
        if text == mode:
            return mode
    r.problems.append(f"{name}={text!r} is not off, on or allow")
    return default


def _hedge(r: Reader) -> HedgeSettings:
    d = _HEDGE
    after = r.raw("HEDGE_AFTER_MS", d.default_after_ms)
    after_ms = None
    if after is not None:
        after_ms = r.number("HEDGE_AFTER_MS", d.default_after_ms, minimum=1.0)
    max_extra = r.get("HEDGE_MAX_EXTRA", d.max_extra, within(0.0, 1.0), "a share from 0 to 1")
    return HedgeSettings(
        mode=opt_in(r, "HEDGE", d.mode),
        after_ms=after_ms,
        min_ms=r.number("HEDGE_MIN_MS", d.min_ms, minimum=1.0),
        max_extra=max_extra,
    )


def _upstream(r: Reader) -> UpstreamSettings:
    default = UpstreamSettings()
    no_proxy = lower_first(r, "NO_PROXY") or ""
    return UpstreamSettings(
        http_proxy=proxy(r, "HTTP_PROXY"),
        https_proxy=proxy(r, "HTTPS_PROXY"),
        no_proxy=tuple(part for part in re.split(r"[,\s]+", no_proxy) if part),
        ssl_cert_file=ca_file(r, "SSL_CERT_FILE"),
        ssl_cert_dir=ca_dir(r, "SSL_CERT_DIR"),
        max_body_bytes=r.integer("MAX_UPSTREAM_BODY_BYTES", default.max_body_bytes, minimum=1024),
    )
