"""Secrets out of sight: masked when the configuration is shown, listed for redaction."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from modelrouter.config.structs import ProviderSettings, Settings


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
    data["tenants"]["admin_keys"] = [mask(k) for k in settings.tenants.admin_keys]
    data["state_backend"] = "redis" if settings.redis_url else "memory"
    if settings.replaced_providers:  # said plainly: an environment provider is not in use
        data["notes"] = [
            f"provider {name!r} of the environment is replaced by the routing file's "
            f"deployment {name!r}"
            for name in settings.replaced_providers
        ]
    for provider in data["providers"]:
        provider["api_key"] = mask(provider["api_key"])
        provider["base_url"] = mask_url(provider["base_url"])
        provider["proxy"] = mask_url(provider["proxy"])
    tracing = data["tracing"]
    tracing["endpoint"] = mask_url(tracing["endpoint"])
    tracing["headers"] = [[name, mask(value)] for name, value in settings.tracing.headers]
    upstream = data["upstream"]
    upstream["http_proxy"] = mask_url(upstream["http_proxy"])
    upstream["https_proxy"] = mask_url(upstream["https_proxy"])
    return data


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret, for the log redaction processor."""
    found = list(settings.api_keys) + list(settings.tenants.admin_keys)
    found += [p.api_key for p in settings.providers if p.api_key]
    if settings.redis_url:
        found += _url_passwords(settings.redis_url)
    urls = [p.base_url for p in settings.providers] + [p.proxy or "" for p in settings.providers]
    urls += [settings.upstream.http_proxy or "", settings.upstream.https_proxy or ""]
    found += [secret for url in urls if "@" in url for secret in _basic_secrets(url)]
    if settings.database_url:
        found += _url_passwords(settings.database_url)
    # A header's whole value, and its credential alone ("Bearer <token>": the token).
    values = [value for _, value in settings.tracing.headers]
    found += values + [value.rsplit(" ", 1)[-1] for value in values if " " in value]
    endpoint = settings.tracing.endpoint or ""
    if "@" in endpoint:
        found += _basic_secrets(endpoint)
    return found


def upstream_secrets(provider: ProviderSettings) -> list[str]:
    """What `provider`'s upstream receives from us, so all it could echo in an answer: its key
    and the credentials in its base URL (a proxy's are the proxy's, not the upstream's)."""
    found = [provider.api_key] if provider.api_key else []
    if "@" in provider.base_url:
        found += _basic_secrets(provider.base_url)
    return found


def _basic_secrets(url: str) -> list[str]:
    """A URL's password and the Basic token made of it (what a proxy or upstream might echo)."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if not password:
        return [user] if user else []  # a lone user name is the secret (a token)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [password, token]
