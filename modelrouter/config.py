"""Configuration from the environment: typed, validated at start-up, all problems listed at once."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

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
    max_concurrency: int


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the Redis backend behaves (used only when REDIS_URL is set)."""

    key_prefix: str = "mr"  # REDIS_KEY_PREFIX: several deployments can share one Redis
    timeout: float = 0.25  # REDIS_TIMEOUT: the longest any request waits on Redis
    expected_replicas: int = 1  # REDIS_EXPECTED_REPLICAS: local limits = limit / this, degraded
    cluster: bool = False  # REDIS_CLUSTER: REDIS_URL names one node of a Redis Cluster
    max_connections: int = 64  # REDIS_MAX_CONNECTIONS: pool size per process


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    redis_url: str | None = None
    redis: RedisSettings = RedisSettings()
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
    """Reads typed values from an environment, collecting every problem instead of stopping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None  # an empty variable counts as unset

    def get(self, name: str, default: T, parse: Callable[[str], T], rule: str = "") -> T:
        value = self.raw(name)
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
    value = reader.raw(name) or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        reader.problems.append(f"{name}={value!r} is not an http(s) URL")
    return value.rstrip("/")


def _providers(
    reader: _Reader, global_rpm: int
) -> tuple[tuple[ProviderSettings, ...], tuple[str, ...]]:
    order = _split(reader.raw("PROVIDER_ORDER") or DEFAULT_ORDER)
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
            model=reader.raw(f"{prefix}_MODEL") or defaults.model,
            api_key=key,
            rate_limit=reader.integer(f"{prefix}_RATE_LIMIT", defaults.rate_limit or global_rpm),
            max_concurrency=reader.integer(f"{prefix}_MAX_CONCURRENCY", 256, minimum=1),
        )
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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment) or raise ConfigError."""
    r = _Reader(os.environ if env is None else env)
    global_rpm = r.integer("RATE_LIMIT_REQUESTS_PER_MINUTE", 60)
    providers, skipped = _providers(r, global_rpm)
    log_format = r.raw("LOG_FORMAT") or "json"
    if log_format not in ("json", "console"):
        r.problems.append(f"LOG_FORMAT={log_format!r} is not json or console")
        log_format = "json"
    log_level = (r.raw("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        r.problems.append(f"LOG_LEVEL={log_level!r} is not a log level")
    settings = Settings(
        host=r.raw("HOST") or "127.0.0.1",
        port=r.get("PORT", 8000, _port, "a TCP port (1-65535)"),
        api_keys=_split(r.raw("API_KEY") or ""),
        redis_url=r.raw("REDIS_URL"),
        redis=_redis(r),
        provider_timeout=r.number("PROVIDER_TIMEOUT", 30.0, minimum=0.001),
        first_chunk_timeout=r.number("FIRST_CHUNK_TIMEOUT", 3.0, minimum=0.001),
        max_operation_timeout=r.number("MAX_OPERATION_TIMEOUT", 120.0, minimum=0.001),
        backoff_base_seconds=r.number("BACKOFF_BASE_SECONDS", 5.0),
        backoff_max_seconds=r.number("BACKOFF_MAX_SECONDS", 300.0),
        rate_limit_requests_per_minute=global_rpm,
        max_concurrent_streams=r.integer("MAX_CONCURRENT_STREAMS", 10, minimum=1),
        stream_lease_ttl=r.number("STREAM_LEASE_TTL_SECONDS", 30.0, minimum=0.1),
        stream_lease_renew=r.number("STREAM_LEASE_RENEW_SECONDS", 10.0, minimum=0.05),
        max_body_bytes=r.integer("MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        header_timeout=r.seconds("HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.05, maximum=3600),
        keepalive_timeout=r.seconds("KEEPALIVE_TIMEOUT_SECONDS", 75.0, minimum=0.05, maximum=3600),
        max_connections=r.get("MAX_CONNECTIONS", None, _bounded(int, 1), "an integer >= 1"),
        drain_seconds=r.seconds("DRAIN_SECONDS", 0.0, minimum=0, maximum=3600),
        shutdown_timeout=r.seconds("SHUTDOWN_TIMEOUT_SECONDS", 25.0, minimum=0, maximum=3600),
        log_level=log_level,
        log_format="console" if log_format == "console" else "json",
        log_flush_seconds=r.number("LOG_FLUSH_SECONDS", 0.1),
        providers=providers,
        skipped_providers=skipped,
        model_aliases=_aliases(r, providers),
    )
    if settings.backoff_max_seconds < settings.backoff_base_seconds:
        r.problems.append("BACKOFF_MAX_SECONDS must be >= BACKOFF_BASE_SECONDS")
    if settings.redis_url is not None and urlsplit(settings.redis_url).scheme not in REDIS_SCHEMES:
        r.problems.append(
            "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://"
        )
    if settings.stream_lease_renew >= settings.stream_lease_ttl:
        r.problems.append("STREAM_LEASE_RENEW_SECONDS must be < STREAM_LEASE_TTL_SECONDS")
    if not settings.api_keys and not is_loopback(settings.host):
        r.problems.append(
            f"API_KEY is unset while HOST={settings.host} is not a loopback address: "
            "refusing to serve without authentication"
        )
    if r.problems:
        raise ConfigError(r.problems)
    return settings


def _redis(r: _Reader) -> RedisSettings:
    prefix = r.raw("REDIS_KEY_PREFIX") or "mr"
    if not PREFIX_RE.fullmatch(prefix):
        r.problems.append(f"REDIS_KEY_PREFIX={prefix!r} is not letters, digits, '_', '-', '.', ':'")
    return RedisSettings(
        key_prefix=prefix,
        timeout=r.number("REDIS_TIMEOUT", 0.25, minimum=0.001),
        expected_replicas=r.integer("REDIS_EXPECTED_REPLICAS", 1, minimum=1),
        cluster=r.get("REDIS_CLUSTER", False, _flag, "a flag (1/0, true/false)"),
        max_connections=r.integer("REDIS_MAX_CONNECTIONS", 64, minimum=2),
    )


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
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:" if parts.username else ":"
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
    data["state_backend"] = "redis" if settings.redis_url else "memory"
    for provider in data["providers"]:
        provider["api_key"] = mask(provider["api_key"])
    return data


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret, for the log redaction processor."""
    found = list(settings.api_keys)
    found += [p.api_key for p in settings.providers if p.api_key]
    if settings.redis_url:
        found += _url_passwords(settings.redis_url)
    return found
