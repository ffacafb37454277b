"""structlog set-up: one JSON line per event, `request_id` from contextvars, secrets redacted.

Redaction runs on the rendered line, so every value however deeply nested and the formatted
exception text are covered: a credential that an upstream echoes back in an error body (or that
ends up in an exception message) never reaches a written line. Records from the standard
library (aiohttp's own errors, asyncio) go through the same processors.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, Final, TextIO

import msgspec
import structlog

from modelrouter.redact import Redactor

REDACTOR = Redactor()
# The request a line belongs to. One ContextVar of our own: setting it per request is far
# cheaper than structlog's bound_contextvars (a generator-based context manager and a var per
# key), and a task started for the request sets it once. structlog's own contextvars still merge.
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("modelrouter_request_id", default=None)


EventDict = MutableMapping[str, Any]


def add_request_id(_: Any, __: str, event: EventDict) -> EventDict:
    request_id = CURRENT_REQUEST_ID.get()
    if request_id is not None and "request_id" not in event:
        event["request_id"] = request_id
    return event


class _Timestamp:
    """ISO 8601 UTC with microseconds, the date and time part formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


class _Redacted:
    """Wraps the renderer: the rendered line, with every value and traceback in it, is
    redacted once (one pass over one string, not one call per value)."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        return REDACTOR(self.renderer(logger, name, event))


_HANDLER_NAME: Final = "modelrouter"


_encode_json = msgspec.json.Encoder().encode
_SIMPLE: Final = frozenset({str, int, float, bool, type(None)})
MAX_DEPTH: Final = 8  # deeper than any event we log; a cycle stops here instead of recursing


def _plain(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-native data; anything else as the text a console would show."""
    if type(value) in _SIMPLE:
        return value
    if depth < MAX_DEPTH:
        if isinstance(value, dict):
            return {str(k): _plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_plain(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


def _json_line(event: Any, **_: Any) -> str:
    # msgspec encodes several times faster than the json module. Events of plain values (all of
    # ours) go straight through; others are converted first (bytes as text, not base64).
    for value in event.values():
        if type(value) not in _SIMPLE:
            return _encode_json(_plain(event)).decode()
    return _encode_json(event).decode()


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_json_line)
    return structlog.dev.ConsoleRenderer(colors=False)


def _pre_chain() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        _Timestamp(),
    ]


class _Stderr:
    """Writes to whatever `sys.stderr` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LineLogger:
    """One write per line, with its newline (stderr is line-buffered: one syscall). structlog's
    PrintLogger goes through print(), a lock and an extra flush for every line."""

    __slots__ = ("_stream",)

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr  # resolved per line: test runners swap stderr
        stream.write(message + "\n")
        if stream is not sys.stderr:
            stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


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
                _Redacted(_renderer(fmt)),
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
            _Redacted(_renderer(fmt)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: _LineLogger(stream),
        cache_logger_on_first_use=cache,
    )
    _route_stdlib(numeric, fmt, out)
