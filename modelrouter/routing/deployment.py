"""One `deployments:` entry of the routing file, read into the `ProviderSettings` an environment
provider has (one provider actor each: its own health, budget and pool)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from modelrouter.aliases import RESERVED
from modelrouter.config import (
    ADAPTER_KINDS,
    CONTINUATIONS,
    AdapterKind,
    Continuation,
    ProviderSettings,
)
from modelrouter.config.network import CONTROL, checked_url, proxy_url
from modelrouter.config.network import ca_file as _ca_file
from modelrouter.config.reader import Reader
from modelrouter.routing.nodes import Node, Source, boolean, integer, number

# A deployment's name is a metric label, a /health key, a Redis hash tag and the head of
# `name/model`: lower-case letters, digits and . _ - only.
DEPLOYMENT_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
GROUP_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_TIMEOUT: Final = 3600.0
DEPLOYMENT_KEYS: Final = frozenset(
    {
        "name",
        "kind",
        "base_url",
        "api_key",
        "models",
        "rpm",
        "tpm",
        "max_parallel_streams",
        "max_concurrency",
        "max_connections",
        "weight",
        "provider_timeout",
        "first_chunk_timeout",
        "connect_timeout",
        "proxy",
        "ca_bundle",
        "api_version",
        "stream_options",
        "propagate_trace",
        "continuation",
    }
)
_REQUIRED: Final = frozenset({"name", "kind", "base_url", "models"})
_DEFAULT: Final = ProviderSettings("", "openai", "", "", None, 0)
_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")  # it goes into a query string
T = TypeVar("T")
D = TypeVar("D")


def read_deployment(
    source: Source, node: Node, index: int, *, default_rpm: int
) -> ProviderSettings | None:
    """The deployment at `node`, each problem noted in `source`; None when it is not even a
    mapping. One with problems is still returned, so that the rest of the file is checked
    against what it meant (its name, the groups it serves); the file is refused anyway."""
    fields = source.fields(
        node, f"deployments[{index}]", allowed=DEPLOYMENT_KEYS, required=_REQUIRED
    )
    if fields is None:
        return None
    name = _name(source, fields.get("name"), index)
    what = f"deployment {name!r}" if name else f"deployments[{index}]"
    kind = _kind(source, fields.get("kind"), what)
    models = _models(source, fields.get("models"), what)
    fields_ = _Fields(source, fields, what)
    settings = ProviderSettings(
        name=name or "",
        kind=kind,
        base_url=_base_url(source, fields.get("base_url"), what) or "",
        model=next(iter(models.values()), ""),
        api_key=_api_key(source, fields.get("api_key"), what),
        rate_limit=fields_.get("rpm", integer(0), "an integer >= 0", default_rpm),
        tpm=fields_.get("tpm", integer(1), "an integer >= 1", 0),
        max_parallel_streams=fields_.get("max_parallel_streams", integer(1), "an integer >= 1", 0),
        max_concurrency=fields_.get(
            "max_concurrency", integer(1), "an integer >= 1", _DEFAULT.max_concurrency
        ),
        max_connections=fields_.get(
            "max_connections", integer(1), "an integer >= 1", _DEFAULT.max_connections
        ),
        proxy=_proxy(source, fields.get("proxy"), what),
        ca_bundle=_ca_bundle(source, fields.get("ca_bundle"), what),
        api_version=_api_version(source, fields.get("api_version"), what, kind),
        models=models,
        weight=fields_.get("weight", number(0, 1e6, above=True), "a number > 0", _DEFAULT.weight),
        provider_timeout=fields_.timeout("provider_timeout"),
        first_chunk_timeout=fields_.timeout("first_chunk_timeout"),
        connect_timeout=fields_.timeout("connect_timeout"),
        stream_options=fields_.get(
            "stream_options", boolean, "true or false", _DEFAULT.stream_options
        ),
        propagate_trace=fields_.get(
            "propagate_trace", boolean, "true or false", _DEFAULT.propagate_trace
        ),
        continuation=_continuation(source, fields.get("continuation"), what),
        from_file=True,
    )
    if settings.api_key is not None and "@" in settings.base_url.partition("//")[2].split("/")[0]:
        source.problem(
            node,
            f"{what}: base_url carries user:password and api_key is set too: "
            "keep one (credentials in the URL are sent as Basic auth)",
        )
    return settings


def _name(source: Source, node: Node | None, index: int) -> str | None:
    if node is None:
        return None
    name = source.text(node, f"deployments[{index}]: name")
    if name is not None and not DEPLOYMENT_NAME.fullmatch(name):
        source.problem(
            node,
            f"deployments[{index}]: name {name!r} must be lower-case letters, "
            "digits and . _ - (at most 64; it is a metric label and a Redis key)",
        )
        return None
    return name


def _kind(source: Source, node: Node | None, what: str) -> AdapterKind:
    if node is None:
        return "openai"  # the missing key is a problem already
    text = source.text(node, f"{what}: kind")
    for kind in ADAPTER_KINDS:
        if text == kind:
            return kind
    if text is not None:
        source.problem(node, f"{what}: kind {text!r} is not one of {', '.join(ADAPTER_KINDS)}")
    return "openai"


def _models(source: Source, node: Node | None, what: str) -> dict[str, str]:
    """Group name (what clients ask for) -> the model the upstream is asked for."""
    if node is None:
        return {}
    items = source.mapping(node, f"{what}: models")
    if items is None:
        return {}
    if not items:
        source.problem(node, f"{what}: models is empty (it serves no model group)")
    models: dict[str, str] = {}
    for group, (key, value) in items.items():
        if not GROUP_NAME.fullmatch(group) or group in RESERVED:
            source.problem(
                key,
                f"{what}: model group {group!r} must be letters, digits and "
                ". _ : - (no '/'), at most 64 characters, and not auto",
            )
            continue
        upstream = source.text(value, f"{what}: models.{group}")
        if upstream is not None and CONTROL.search(upstream):
            source.problem(value, f"{what}: models.{group} has a control character")
        elif upstream is not None:
            models[group] = upstream
    return models


def _base_url(source: Source, node: Node | None, what: str) -> str | None:
    if node is None:
        return None
    url = source.text(node, f"{what}: base_url")
    if url is None:
        return None
    label = f"{what}: base_url"
    parts = _checked(source, node, lambda r: checked_url(r, label, url, ("http", "https")))
    if parts is not None and (parts.query or parts.fragment):
        source.problem(node, f"{label} must not have a ?query or #fragment (paths are appended)")
    return url.rstrip("/")


def _api_key(source: Source, node: Node | None, what: str) -> str | None:
    if node is None:
        return None
    key = source.text(node, f"{what}: api_key", secret=True)
    if key is not None and (CONTROL.search(key) or not key.isascii()):
        source.problem(
            node,
            f"{what}: api_key contains a line break, a control or a non-ASCII character "
            "(value not shown): it is sent in a header",
        )
        return None
    return key


def _proxy(source: Source, node: Node | None, what: str) -> str | None:
    """Absent: HTTP(S)_PROXY/NO_PROXY apply; `""`: no proxy; else an http:// proxy."""
    if node is None:
        return None
    if getattr(node, "value", None) == "":
        return ""
    value = source.text(node, f"{what}: proxy", secret=True)
    if value is None:
        return None
    label = f"{what}: proxy"
    return _checked(source, node, lambda r: proxy_url(r, label, value))


def _ca_bundle(source: Source, node: Node | None, what: str) -> str | None:
    if node is None:
        return None
    path = source.text(node, f"{what}: ca_bundle")
    if path is None:
        return None
    label = f"{what}: ca_bundle"
    return _checked(source, node, lambda r: _ca_file(r, label), env={label: path})


def _continuation(source: Source, node: Node | None, what: str) -> Continuation | None:
    if node is None:
        return None
    text = source.text(node, f"{what}: continuation")
    for mode in CONTINUATIONS:
        if text == mode:
            return mode
    if text is not None:
        source.problem(
            node, f"{what}: continuation {text!r} is not one of {', '.join(CONTINUATIONS)}"
        )
    return None


def _api_version(source: Source, node: Node | None, what: str, kind: AdapterKind) -> str | None:
    if node is None:
        return None
    version = source.text(node, f"{what}: api_version")
    if version is not None and kind != "azure":
        source.problem(node, f"{what}: api_version applies to kind azure only")
        return None
    if version is not None and not _VERSION.fullmatch(version):
        source.problem(node, f"{what}: api_version {version!r} is not a version (2024-10-21, v1)")
        return None
    return version


class _Fields:
    """A deployment's optional scalar keys, each read with its rule or left at its default."""

    def __init__(self, source: Source, fields: dict[str, Node], what: str) -> None:
        self.source = source
        self.fields = fields
        self.what = what

    def get(self, key: str, parse: Callable[[object], T], rule: str, default: D) -> T | D:
        node = self.fields.get(key)
        if node is None:
            return default
        value = self.source.value(node, f"{self.what}: {key}", parse, rule)
        return default if value is None else value

    def timeout(self, key: str) -> float | None:
        rule = f"a number of seconds > 0 and <= {MAX_TIMEOUT:g}"
        return self.get(key, number(0, MAX_TIMEOUT, above=True), rule, None)


def _checked(
    source: Source,
    node: Node,
    check: Callable[[Reader], T],
    *,
    env: Mapping[str, str] | None = None,
) -> T:
    """Run one of the environment's checks of a value, its problems placed at `node`'s line."""
    reader = Reader(env or {})
    result = check(reader)
    for problem in reader.problems:
        source.problem(node, problem)
    return result
