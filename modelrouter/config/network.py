"""Checks of what reaches the network: URLs (never quoted: they may carry a password),
proxies, CA files, and the values that go into request lines and headers."""

from __future__ import annotations

import os
import re
import ssl
from urllib.parse import SplitResult, urlsplit

from modelrouter.config.reader import Reader
from modelrouter.config.structs import REDIS_SCHEMES, ProviderSettings


def http_url(reader: Reader, name: str, default: str) -> str:
    value = reader.raw(name, default) or default
    parts = checked_url(reader, name, value, ("http", "https"))
    if parts is not None and (parts.query or parts.fragment):
        reader.problems.append(f"{name} must not have a ?query or #fragment (paths are appended)")
    return value.rstrip("/")


CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # CR, LF, NUL and the rest: never in a header line


def checked_url(
    reader: Reader, name: str, value: str, schemes: tuple[str, ...], *, need_host: bool = True
) -> SplitResult | None:
    """Parse a URL-valued variable, or add one problem naming what is wrong with it.

    Problems never quote the URL: it may carry a password.
    """
    if CONTROL.search(value) or " " in value:
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


def check_redis_url(reader: Reader, url: str) -> None:
    schemes = tuple(sorted(REDIS_SCHEMES))
    scheme = url.partition("://")[0]
    if scheme == "unix" or scheme.endswith("+sentinel"):  # no host, or a list of them
        if scheme not in REDIS_SCHEMES or CONTROL.search(url) or " " in url:
            reader.problems.append(f"REDIS_URL must start with {', '.join(schemes)}:// (no spaces)")
            return
        netloc = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
        for item in filter(None, netloc.split(",")):
            host, _, port = item.rpartition(":")
            if host and not (port.isdigit() and 1 <= int(port) <= 65535):
                reader.problems.append("REDIS_URL has a sentinel port that is not 1 to 65535")
                return
        return
    checked_url(reader, "REDIS_URL", url, schemes, need_host=False)  # redis-py: localhost


def lower_first(reader: Reader, name: str) -> str | None:
    """The lower-case variable wins over the upper-case one, as in curl. (Read from the same
    mapping; documented under its upper-case name, as `variables` lists it.)"""
    return reader.env.get(name.lower(), "").strip() or reader.raw(name)


def proxy(reader: Reader, name: str) -> str | None:
    value = lower_first(reader, name)
    if value is None:
        return None
    shown = name.lower() if reader.env.get(name.lower(), "").strip() else name
    return proxy_url(reader, shown, value)


def provider_proxy(reader: Reader, name: str) -> str | None:
    """`<PROVIDER>_PROXY`: unset follows the environment; set but empty means no proxy (the one
    variable where empty is not the same as unset)."""
    if name in reader.env and not reader.env[name].strip():
        return ""
    value = reader.raw(name)
    return None if value is None else proxy_url(reader, name, value)


def proxy_url(reader: Reader, name: str, value: str) -> str | None:
    url = value if "://" in value else f"http://{value}"  # curl's reading of host:port
    if url.partition("://")[0].lower() != "http":
        reader.problems.append(
            f"{name} must be an http:// proxy (https and socks proxies are not supported; "
            "https providers are still reached with TLS end to end through it)"
        )
        return None
    parts = checked_url(reader, name, url, ("http",))
    if parts is not None and parts.path.strip("/"):
        reader.problems.append(f"{name} must be http://[user:password@]host[:port], with no path")
        return None
    return url if parts is not None else None


def ca_file(reader: Reader, name: str) -> str | None:
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


def ca_dir(reader: Reader, name: str) -> str | None:
    path = reader.raw(name)
    if path is not None and not os.path.isdir(path):
        reader.problems.append(f"{name}={path!r} is not a directory")
        return None
    return path


def check_provider_headers(reader: Reader, prefix: str, provider: ProviderSettings) -> None:
    """What goes into a request line or a header must not be able to break out of it."""
    key = provider.api_key
    if key is not None and (CONTROL.search(key) or not key.isascii()):
        reader.problems.append(
            f"{prefix}_API_KEY contains a line break, a control or a non-ASCII character "
            "(value not shown): it is sent in a header"
        )
    if CONTROL.search(provider.model):
        reader.problems.append(f"{prefix}_MODEL contains a line break or a control character")
    try:
        userinfo = "@" in urlsplit(provider.base_url).netloc
    except ValueError:
        return  # reported by url
    if userinfo and key is not None:
        reader.problems.append(
            f"{prefix}_BASE_URL carries user:password and {prefix}_API_KEY is set too: keep one "
            "(credentials in the URL are sent as Basic auth, in the key's place)"
        )
