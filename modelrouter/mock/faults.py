"""Fault settings of the mock provider: one frozen struct, a path-spec parser, CLI flags.

The same table of value parsers serves the ``/x/<spec>/`` path prefix and the
``modelrouter mock-provider`` flags, so both accept exactly the same values.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from urllib.parse import unquote

import msgspec

__all__ = ["Faults", "add_mock_arguments", "faults_from_args", "parse_spec"]

MAX_SECONDS = 3600.0
MAX_TOKENS = 1_000_000


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """How the mock misbehaves; the defaults describe a healthy, instant provider.

    Each field is explained in ``_FIELD_DOCS`` (shown as the CLI help).
    """

    status: int | None = None
    fail_first: int | None = None
    retry_after: str | None = None
    first_delay: float = 0.0
    slow_share: float = 0.0
    slow_delay: float = 0.0
    token_delay: float = 0.0
    tokens: int = 8
    stall_after: int | None = None
    reset_after: int | None = None
    malformed: bool = False
    stream_error_after: int | None = None
    echo_auth: bool = False
    echo: bool = False
    tool_call: bool = False
    html: bool = False
    truncate: bool = False
    no_done: bool = False
    hold_open: bool = False
    short: bool = False


def _status(raw: str) -> int:
    value = _int(raw)
    if not 400 <= value <= 599:
        raise ValueError("expected an HTTP error status between 400 and 599")
    return value


def _int(raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise ValueError("expected an integer") from None


def _count(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"expected an integer between 0 and {MAX_TOKENS}")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(value) or not 0.0 <= value <= MAX_SECONDS:
        raise ValueError(f"expected seconds between 0 and {MAX_SECONDS:g}")
    return value


def _share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a share between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a share between 0 and 1")
    return value


def _header(raw: str) -> str:
    if not raw or not raw.isprintable():
        raise ValueError("expected a non-empty printable header value")
    return raw


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected 1 or 0 (or true/false)")


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parse_optional(raw: str) -> object:
        return None if raw.lower() == "none" else parse(raw)

    return parse_optional


_PARSERS: dict[str, Callable[[str], object]] = {
    "status": _optional(_status),
    "fail_first": _optional(_count),
    "retry_after": _optional(_header),
    "first_delay": _seconds,
    "slow_share": _share,
    "slow_delay": _seconds,
    "token_delay": _seconds,
    "tokens": _count,
    "stall_after": _optional(_count),
    "reset_after": _optional(_count),
    "malformed": _flag,
    "stream_error_after": _optional(_count),
    "echo_auth": _flag,
    "echo": _flag,
    "tool_call": _flag,
    "html": _flag,
    "truncate": _flag,
    "no_done": _flag,
    "hold_open": _flag,
    "short": _flag,
}
if set(_PARSERS) != set(Faults.__struct_fields__):  # pragma: no cover - a developer error
    raise RuntimeError("every Faults field needs a value parser in _PARSERS")

_BOOLEANS = frozenset(
    (
        "malformed",
        "echo_auth",
        "echo",
        "tool_call",
        "html",
        "truncate",
        "no_done",
        "hold_open",
        "short",
    )
)


def _pairs(spec: str) -> list[tuple[str, str]]:
    """Split ``key=value,...`` (values still URL-encoded).

    A part without ``=`` right after ``retry_after`` continues its value: an HTTP-date has a
    comma, and URL libraries such as yarl turn ``%2C`` back into ``,`` in paths.
    """
    pairs: list[tuple[str, str]] = []
    for part in spec.split(","):
        key, sep, raw = part.partition("=")
        if not sep and pairs and pairs[-1][0] == "retry_after":
            pairs[-1] = ("retry_after", pairs[-1][1] + "," + part)
            continue
        if not sep or not key:
            raise ValueError(f"fault spec {spec!r}: {part!r} is not key=value")
        pairs.append((key, raw))
    return pairs


def parse_spec(spec: str, base: Faults) -> Faults:
    """Apply a ``key=value,key=value`` spec (values URL-encoded) on top of ``base``.

    ``none`` clears an optional setting. Raises ``ValueError`` naming the bad part.
    """
    if not spec:
        raise ValueError("empty fault spec: expected key=value[,key=value...]")
    changes: dict[str, object] = {}
    for key, raw in _pairs(spec):
        parse = _PARSERS.get(key)
        if parse is None:
            known = ", ".join(_PARSERS)
            raise ValueError(f"fault spec {spec!r}: unknown key {key!r} (known: {known})")
        if key in changes:
            raise ValueError(f"fault spec {spec!r}: key {key!r} given twice")
        value = unquote(raw)
        try:
            changes[key] = parse(value)
        except ValueError as exc:
            raise ValueError(f"fault spec {spec!r}: bad {key}={value!r}: {exc}") from None
    return msgspec.structs.replace(base, **changes)


def slow(faults: Faults, seen: int) -> Faults:
    """The faults of request number `seen` (counted from 1): with `slow_delay` added to its
    first delay when it is one of the `slow_share` (deterministic, evenly spread)."""
    share = faults.slow_share
    if share and math.floor(seen * share) > math.floor((seen - 1) * share):
        return msgspec.structs.replace(faults, first_delay=faults.first_delay + faults.slow_delay)
    return faults


def _flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _dest(key: str) -> str:
    return "mock_" + key


def _arg_type(key: str) -> Callable[[str], object]:
    parse = _PARSERS[key]

    def convert(raw: str) -> object:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{_flag_name(key)} {raw!r}: {exc}") from None

    return convert


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per fault (``--status``, ``--retry-after``, ...): request defaults."""
    group = parser.add_argument_group(
        "mock faults", "defaults for every request; a /x/<spec>/ path prefix overrides them"
    )
    for key in _PARSERS:
        doc = _FIELD_DOCS.get(key, "")
        if key in _BOOLEANS:
            group.add_argument(_flag_name(key), dest=_dest(key), action="store_true", help=doc)
        else:
            group.add_argument(
                _flag_name(key),
                dest=_dest(key),
                type=_arg_type(key),
                default=None,
                metavar=key.upper(),
                help=doc,
            )


def faults_from_args(ns: argparse.Namespace) -> Faults:
    """Build the default ``Faults`` from flags added by :func:`add_mock_arguments`."""
    changes: dict[str, object] = {}
    for key in _PARSERS:
        value = getattr(ns, _dest(key), None)
        if value is not None and value is not False:
            changes[key] = value
    return msgspec.structs.replace(Faults(), **changes)


_FIELD_DOCS: dict[str, str] = {
    "status": "answer this HTTP status (400-599) with the flavour's error body",
    "fail_first": "apply --status only to the first N requests (per path prefix), then recover",
    "retry_after": "Retry-After header value on error responses (seconds or HTTP-date)",
    "first_delay": "seconds before the first token / the whole non-stream response",
    "slow_share": "share (0-1) of requests whose first token waits --slow-delay more: spread "
    "evenly by the request count per path prefix (0.03: the 34th, 67th, 100th...)",
    "slow_delay": "extra seconds before the first token of a --slow-share request",
    "token_delay": "seconds between streamed tokens",
    "tokens": "number of reply tokens (default 8)",
    "stall_after": "after N tokens, hold the connection open without sending",
    "reset_after": "after N tokens, abort the TCP connection (non-stream: at once)",
    "malformed": "send invalid JSON (body, or one stream line after the first token)",
    "stream_error_after": "after N tokens, send an in-stream error object and stop",
    "echo_auth": "quote the received Authorization / x-api-key in error messages",
    "echo": "reply with the last user message, split into word tokens",
    "tool_call": "answer with one tool call (the first tool named, else get_weather)",
    "html": "answer an HTML page with status 200 (a captive portal, a misrouted proxy)",
    "truncate": "close the connection cleanly halfway through the body (stream: the 2nd token)",
    "no_done": "stream: end the response cleanly without the end events ([DONE], message_stop)",
    "hold_open": "send the whole answer but never end the HTTP response (hold the connection)",
    "short": "embeddings: answer one vector fewer than the inputs (the last one left out)",
}
