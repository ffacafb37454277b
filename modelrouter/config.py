"""Configuration from the environment: typed, validated at start-up, all problems listed at once."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from modelrouter.aliases import ModelAlias, parse_aliases

AdapterKind = Literal["openai", "ollama", "anthropic"]
T = TypeVar("T")


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


class ProviderSettings(msgspec.Struct, frozen=True):
    name: str
    kind: AdapterKind
    base_url: str
    model: str
    api_key: str | None
    rate_limit: int  # requests per minute; 0 means unlimited
    max_concurrency: int = 256  # <PROVIDER>_MAX_CONCURRENCY: attempts in flight
    proxy: str | None = None  # <PROVIDER>_PROXY: None follows HTTP(S)_PROXY/NO_PROXY, "" direct
    ca_bundle: str | None = None  # <PROVIDER>_CA_BUNDLE: the CAs this provider is verified with


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


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The response cache (see modelrouter.cache)."""

    mode: CacheMode = "off"  # CACHE_MODE: deterministic caches temperature 0 or a seed only
    ttl: float = 3600.0  # CACHE_TTL_SECONDS
    max_bytes: int = 64 * 1024 * 1024  # CACHE_MAX_BYTES: the in-memory store's budget
    max_value_bytes: int = 1024 * 1024  # CACHE_MAX_VALUE_BYTES: a larger answer is not stored
    key_user: bool = False  # CACHE_KEY_USER: the request's `user` is part of the key
    lock_seconds: float = 10.0  # CACHE_LOCK_SECONDS: the lease of a fleet-wide leader's lock

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


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    redis_url: str | None = None
    redis: RedisSettings = RedisSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    provider_timeout: float = 30.0
    first_chunk_timeout: float = 3.0
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
    cache: CacheSettings = CacheSettings()
    database_url: str | None = None  # DATABASE_URL: history on when set
    history: HistorySettings = HistorySettings()

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def provider(self, name: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == name), None)


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class _Reader:
    """Reads typed values from an environment, collecting every problem instead of stopping.

    It also notes every variable it was asked for, with the default it would use, so the
    documentation can be checked against the code (`variables`).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.read: dict[str, object] = {}

    def raw(self, name: str, default: object = None) -> str | None:
        self.read.setdefault(name, default)
        value = self.env.get(name, "").strip()
        return value or None  # an empty variable counts as unset

    def get(self, name: str, default: T, parse: Callable[[str], T], rule: str = "") -> T:
        value = self.raw(name, default)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not {rule}")
            return default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        return self.get(name, default, _bounded(float, minimum), f"a number >= {minimum:g}")

    def seconds(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """A finite duration: `inf` would make a bound (a timeout, a shutdown) never end."""
        rule = f"a number of seconds from {minimum:g} to {maximum:g}"
        return self.get(name, default, _within(minimum, maximum), rule)

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        return self.get(name, default, _bounded(int, minimum), f"an integer >= {minimum}")


def _bounded(kind: Callable[[str], T], minimum: float) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value >= minimum:  # type: ignore[operator]
            raise ValueError(text)
        return value

    return parse


def _within(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not minimum <= value <= maximum:  # NaN and inf fail here too
            raise ValueError(text)
        return value

    return parse


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(reader: _Reader, name: str, default: str) -> str:
    value = reader.raw(name, default) or default
    parts = _checked_url(reader, name, value, ("http", "https"))
    if parts is not None and (parts.query or parts.fragment):
        reader.problems.append(f"{name} must not have a ?query or #fragment (paths are appended)")
    return value.rstrip("/")


def _providers(
    reader: _Reader, global_rpm: int
) -> tuple[tuple[ProviderSettings, ...], tuple[str, ...]]:
    order = _split(reader.raw("PROVIDER_ORDER", DEFAULT_ORDER) or DEFAULT_ORDER)
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
            base_url=_url(reader, f"{prefix}_BASE_URL", defaults.base_url),
            model=reader.raw(f"{prefix}_MODEL", defaults.model) or defaults.model,
            api_key=key,
            rate_limit=reader.integer(f"{prefix}_RATE_LIMIT", defaults.rate_limit or global_rpm),
            max_concurrency=reader.integer(
                f"{prefix}_MAX_CONCURRENCY", _PROVIDER.max_concurrency, minimum=1
            ),
            proxy=_provider_proxy(reader, f"{prefix}_PROXY"),
            ca_bundle=_ca_file(reader, f"{prefix}_CA_BUNDLE"),
        )
        _check_provider_headers(reader, prefix, settings)
        if defaults.needs_key and key is None:
            skipped.append(name)
        else:
            enabled.append(settings)
    return tuple(enabled), tuple(skipped)


def _aliases(reader: _Reader, providers: tuple[ProviderSettings, ...]) -> tuple[ModelAlias, ...]:
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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment) or raise ConfigError."""
    reader = _Reader(os.environ if env is None else env)
    settings = _load(reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def variables() -> dict[str, object]:
    """Every environment variable the configuration reads, with its default (None: unset)."""
    reader = _Reader({"PROVIDER_ORDER": ",".join(KNOWN_PROVIDERS)})
    _load(reader)
    return reader.read


def _load(r: _Reader) -> Settings:
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
        port=r.get("PORT", d.port, _port, "a TCP port (1-65535)"),
        api_keys=_split(r.raw("API_KEY") or ""),
        redis_url=r.raw("REDIS_URL"),
        redis=_redis(r),
        upstream=_upstream(r),
        provider_timeout=r.number("PROVIDER_TIMEOUT", d.provider_timeout, minimum=0.001),
        first_chunk_timeout=r.number("FIRST_CHUNK_TIMEOUT", d.first_chunk_timeout, minimum=0.001),
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
            "MAX_CONNECTIONS", d.max_connections, _bounded(int, 1), "an integer >= 1"
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
        cache=_cache(r),
        database_url=r.raw("DATABASE_URL"),
        history=_history(r),
    )
    if settings.backoff_max_seconds < settings.backoff_base_seconds:
        r.problems.append("BACKOFF_MAX_SECONDS must be >= BACKOFF_BASE_SECONDS")
    if settings.redis_url is not None:
        _check_redis_url(r, settings.redis_url)
    if settings.database_url is not None:
        _checked_url(r, "DATABASE_URL", settings.database_url, tuple(sorted(DATABASE_SCHEMES)))
    if settings.stream_lease_renew >= settings.stream_lease_ttl:
        r.problems.append("STREAM_LEASE_RENEW_SECONDS must be < STREAM_LEASE_TTL_SECONDS")
    if not settings.api_keys and not is_loopback(settings.host):
        r.problems.append(
            f"API_KEY is unset while HOST={settings.host} is not a loopback address: "
            "refusing to serve without authentication"
        )
    return settings


def _redis(r: _Reader) -> RedisSettings:
    d = _REDIS
    prefix = r.raw("REDIS_KEY_PREFIX", d.key_prefix) or d.key_prefix
    if not PREFIX_RE.fullmatch(prefix):
        r.problems.append(f"REDIS_KEY_PREFIX={prefix!r} is not letters, digits, '_', '-', '.', ':'")
    return RedisSettings(
        key_prefix=prefix,
        timeout=r.number("REDIS_TIMEOUT", d.timeout, minimum=0.001),
        expected_replicas=r.integer("REDIS_EXPECTED_REPLICAS", d.expected_replicas, minimum=1),
        cluster=r.get("REDIS_CLUSTER", d.cluster, _flag, "a flag (1/0, true/false)"),
        max_connections=r.integer("REDIS_MAX_CONNECTIONS", d.max_connections, minimum=2),
    )


def _cache(r: _Reader) -> CacheSettings:
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
        key_user=r.get("CACHE_KEY_USER", d.key_user, _flag, "a flag (1/0, true/false)"),
        lock_seconds=r.number("CACHE_LOCK_SECONDS", d.lock_seconds, minimum=0.1),
    )
    if cache.max_value_bytes > cache.max_bytes:
        r.problems.append("CACHE_MAX_VALUE_BYTES must be <= CACHE_MAX_BYTES")
    return cache


def _history(r: _Reader) -> HistorySettings:
    d = _HISTORY
    flag = "a flag (1/0, true/false)"
    history = HistorySettings(
        store_content=r.get("HISTORY_STORE_CONTENT", d.store_content, _flag, flag),
        flush_seconds=r.number("HISTORY_FLUSH_SECONDS", d.flush_seconds, minimum=0.01),
        batch_rows=r.integer("HISTORY_BATCH_ROWS", d.batch_rows, minimum=1),
        queue_rows=r.integer("HISTORY_QUEUE_ROWS", d.queue_rows, minimum=1),
        retention_days=r.integer("HISTORY_RETENTION_DAYS", d.retention_days),
        pool_size=r.integer("HISTORY_POOL_SIZE", d.pool_size, minimum=1),
    )
    if history.batch_rows > history.queue_rows:
        r.problems.append("HISTORY_BATCH_ROWS must be <= HISTORY_QUEUE_ROWS")
    return history


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(text)
    return lowered in ("1", "true", "yes", "on")


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError(text)
    return value


# --- Upstream network: URLs, proxies, CAs, header values ----------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # CR, LF, NUL and the rest: never in a header line


def _checked_url(
    reader: _Reader, name: str, value: str, schemes: tuple[str, ...], *, need_host: bool = True
) -> SplitResult | None:
    """Parse a URL-valued variable, or add one problem naming what is wrong with it.

    Problems never quote the URL: it may carry a password.
    """
    if _CONTROL.search(value) or " " in value:
        reader.problems.append(f"{name} contains a space or a control character")
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        fault = "a port from 1 to 65535" if "Port" in str(exc) else "a well-formed host"
        reader.problems.append(f"{name} is not a valid URL (it needs {fault})")
        return None
    if parts.scheme not in schemes:
        wanted = ", ".join(f"{scheme}://" for scheme in schemes)
        reader.problems.append(f"{name} must start with {wanted}")
    elif need_host and not parts.hostname:
        reader.problems.append(f"{name} has no host")
    elif port == 0:
        reader.problems.append(f"{name} is not a valid URL (it needs a port from 1 to 65535)")
    else:
        return parts
    return None


def _check_redis_url(reader: _Reader, url: str) -> None:
    schemes = tuple(sorted(REDIS_SCHEMES))
    scheme = url.partition("://")[0]
    if scheme == "unix" or scheme.endswith("+sentinel"):  # no host, or a list of them
        if scheme not in REDIS_SCHEMES or _CONTROL.search(url) or " " in url:
            reader.problems.append(f"REDIS_URL must start with {', '.join(schemes)}:// (no spaces)")
            return
        netloc = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
        for item in filter(None, netloc.split(",")):
            host, _, port = item.rpartition(":")
            if host and not (port.isdigit() and 1 <= int(port) <= 65535):
                reader.problems.append("REDIS_URL has a sentinel port that is not 1 to 65535")
                return
        return
    _checked_url(reader, "REDIS_URL", url, schemes, need_host=False)  # redis-py: localhost


def _upstream(r: _Reader) -> UpstreamSettings:
    default = UpstreamSettings()
    no_proxy = _lower_first(r, "NO_PROXY") or ""
    return UpstreamSettings(
        http_proxy=_proxy(r, "HTTP_PROXY"),
        https_proxy=_proxy(r, "HTTPS_PROXY"),
        no_proxy=tuple(part for part in re.split(r"[,\s]+", no_proxy) if part),
        ssl_cert_file=_ca_file(r, "SSL_CERT_FILE"),
        ssl_cert_dir=_ca_dir(r, "SSL_CERT_DIR"),
        max_body_bytes=r.integer("MAX_UPSTREAM_BODY_BYTES", default.max_body_bytes, minimum=1024),
    )


def _lower_first(reader: _Reader, name: str) -> str | None:
    """The lower-case variable wins over the upper-case one, as in curl. (Read from the same
    mapping; documented under its upper-case name, as `variables` lists it.)"""
    return reader.env.get(name.lower(), "").strip() or reader.raw(name)


def _proxy(reader: _Reader, name: str) -> str | None:
    value = _lower_first(reader, name)
    if value is None:
        return None
    shown = name.lower() if reader.env.get(name.lower(), "").strip() else name
    return _proxy_url(reader, shown, value)


def _provider_proxy(reader: _Reader, name: str) -> str | None:
    """`<PROVIDER>_PROXY`: unset follows the environment; set but empty means no proxy (the one
    variable where empty is not the same as unset)."""
    if name in reader.env and not reader.env[name].strip():
        return ""
    value = reader.raw(name)
    return None if value is None else _proxy_url(reader, name, value)


def _proxy_url(reader: _Reader, name: str, value: str) -> str | None:
    url = value if "://" in value else f"http://{value}"  # curl's reading of host:port
    if url.partition("://")[0].lower() != "http":
        reader.problems.append(
            f"{name} must be an http:// proxy (https and socks proxies are not supported; "
            "https providers are still reached with TLS end to end through it)"
        )
        return None
    parts = _checked_url(reader, name, url, ("http",))
    if parts is not None and parts.path.strip("/"):
        reader.problems.append(f"{name} must be http://[user:password@]host[:port], with no path")
        return None
    return url if parts is not None else None


def _ca_file(reader: _Reader, name: str) -> str | None:
    path = reader.raw(name)
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reader.problems.append(
            f"{name}={path!r} is not a readable PEM file of CA certificates "
            f"({getattr(exc, 'strerror', None) or exc})"
        )
        return None
    return path


def _ca_dir(reader: _Reader, name: str) -> str | None:
    path = reader.raw(name)
    if path is not None and not os.path.isdir(path):
        reader.problems.append(f"{name}={path!r} is not a directory")
        return None
    return path


def _check_provider_headers(reader: _Reader, prefix: str, provider: ProviderSettings) -> None:
    """What goes into a request line or a header must not be able to break out of it."""
    key = provider.api_key
    if key is not None and (_CONTROL.search(key) or not key.isascii()):
        reader.problems.append(
            f"{prefix}_API_KEY contains a line break, a control or a non-ASCII character "
            "(value not shown): it is sent in a header"
        )
    if _CONTROL.search(provider.model):
        reader.problems.append(f"{prefix}_MODEL contains a line break or a control character")
    try:
        userinfo = "@" in urlsplit(provider.base_url).netloc
    except ValueError:
        return  # reported by _url
    if userinfo and key is not None:
        reader.problems.append(
            f"{prefix}_BASE_URL carries user:password and {prefix}_API_KEY is set too: keep one "
            "(credentials in the URL are sent as Basic auth, in the key's place)"
        )


def mask(secret: str | None) -> str | None:
    """Show a secret's last four characters only when it is long enough to stay secret."""
    if secret is None:
        return None
    return "***" + secret[-4:] if len(secret) >= 16 else "***"


def _url_passwords(url: str) -> list[str]:
    """Passwords in a URL: in the userinfo, or as `?password=` (both accepted by redis-py)."""
    parts = urlsplit(url)
    found = [unquote(parts.password)] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query) if key == "password" and value]
    return found


def mask_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:" if parts.username and parts.password is not None else ""
        parts = parts._replace(netloc=f"{user}***@{netloc}")
    if parts.query:
        query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def describe(settings: Settings) -> dict[str, object]:
    """The effective configuration as plain data, every secret masked."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    data["api_keys"] = [mask(k) for k in settings.api_keys]
    data["redis_url"] = mask_url(settings.redis_url)
    data["database_url"] = mask_url(settings.database_url)
    data["state_backend"] = "redis" if settings.redis_url else "memory"
    for provider in data["providers"]:
        provider["api_key"] = mask(provider["api_key"])
        provider["base_url"] = mask_url(provider["base_url"])
        provider["proxy"] = mask_url(provider["proxy"])
    upstream = data["upstream"]
    upstream["http_proxy"] = mask_url(upstream["http_proxy"])
    upstream["https_proxy"] = mask_url(upstream["https_proxy"])
    return data


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret, for the log redaction processor."""
    found = list(settings.api_keys)
    found += [p.api_key for p in settings.providers if p.api_key]
    if settings.redis_url:
        found += _url_passwords(settings.redis_url)
    urls = [p.base_url for p in settings.providers] + [p.proxy or "" for p in settings.providers]
    urls += [settings.upstream.http_proxy or "", settings.upstream.https_proxy or ""]
    found += [secret for url in urls if "@" in url for secret in _basic_secrets(url)]
    if settings.database_url:
        found += _url_passwords(settings.database_url)
    return found


def _basic_secrets(url: str) -> list[str]:
    """A URL's password and the Basic token made of it (what a proxy or upstream might echo)."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if not password:
        return [user] if user else []  # a lone user name is the secret (a token)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [password, token]
