"""structlog set-up: one JSON line per event, `request_id` from contextvars, secrets redacted.

The redaction processor runs last before rendering, on every value however deeply nested and on
the formatted exception text, so a credential that an upstream echoes back in an error body (or
that ends up in an exception message) never reaches a rendered line. Records from the standard
library (aiohttp's own errors, asyncio) go through the same processors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Final, TextIO

import msgspec
import structlog

from modelrouter.redact import Redactor

REDACTOR = Redactor()
MAX_DEPTH: Final = 8  # deeper than any event we log; a cycle stops here instead of recursing


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with credentials removed from every string inside it."""
    if isinstance(value, str):
        return REDACTOR(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < MAX_DEPTH:
        if isinstance(value, dict):
            return {
                redact_value(k, depth + 1): redact_value(v, depth + 1) for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [redact_value(item, depth + 1) for item in value]
    return REDACTOR(_as_text(value))


def _as_text(value: Any) -> str:
    """The text a renderer would show for a value that is not JSON-native."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)  # what JSONRenderer and ConsoleRenderer would print anyway


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Redact every value: upstream errors may echo back the credential they received."""
    for key, value in event.items():
        if not key.startswith("_"):  # structlog's own bookkeeping (e.g. `_record`) stays as is
            event[key] = redact_value(value)
    return event


_HANDLER_NAME: Final = "modelrouter"


_encode_json = msgspec.json.Encoder().encode


def _json_line(event: Any, **_: Any) -> str:
    # After redaction every value is JSON-native, which msgspec encodes several times faster
    # than the json module.
    return _encode_json(event).decode()


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_json_line)
    return structlog.dev.ConsoleRenderer(colors=False)


def _pre_chain() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


class _Stderr:
    """Writes to whatever `sys.stderr` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _route_stdlib(level: int, fmt: str, stream: TextIO) -> None:
    """Send standard-library records (aiohttp, asyncio) through the same chain and renderer."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_pre_chain(), structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                _renderer(fmt),
            ],
        )
    )
    root.addHandler(handler)
    root.setLevel(level)


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "json",
    secrets: Iterable[str] | None = None,
    stream: TextIO | None = None,
    cache: bool = True,
) -> None:
    """Configure structlog (and the stdlib root logger) to write one line per event to `stream`.

    `stream` defaults to stderr; tests pass a StringIO to read the rendered lines. `cache`
    keeps each logger once built (much cheaper per line); tests that use
    `structlog.testing.capture_logs()` need it off, since that cannot reach cached loggers.
    """
    if secrets:
        REDACTOR.add(secrets)
    out: Any = _Stderr() if stream is None else stream
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            *_pre_chain(),
            structlog.processors.format_exc_info,
            redact_event,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    _route_stdlib(numeric, fmt, out)
