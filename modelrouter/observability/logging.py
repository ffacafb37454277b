"""structlog set-up: one JSON line per event, `request_id` from contextvars, secrets redacted.

Redaction runs on the rendered line, so every value however deeply nested and the formatted
exception text are covered: a credential that an upstream echoes back in an error body (or that
ends up in an exception message) never reaches a written line. Records from the standard
library (aiohttp's own errors, asyncio) go through the same processors.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, Final, TextIO

import msgspec
import structlog

from modelrouter.redact import Redactor

# Every written line passes through it. Its secrets are lent by their owners: the process's
# configuration (`configure_logging`) and each running app (for its lifetime).
REDACTOR = Redactor()
# The request a line belongs to. One ContextVar of our own, set once per request (structlog's
# bound_contextvars costs a context manager and a var per key: docs/performance.md); a task
# started for the request sets it once. structlog's own contextvars still merge.
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


class LineWriter:
    """Where rendered lines go. Lines at INFO and below may wait in a buffer for up to `delay`
    seconds (or until `limit` characters) and go out in one write (a write per line costs the
    writer and the reader CPU per request: docs/performance.md). Warnings and errors, and the
    standard library's records, go out at once, after what waits, so the order holds.
    `delay=None` writes every line at once. What waits is written at exit (`flush_logs`).
    """

    def __init__(
        self, stream: TextIO | None, *, delay: float | None = 0.1, limit: int = 1 << 16
    ) -> None:
        self._stream = stream  # None: whatever sys.stderr is when writing (runners swap it)
        self._delay = delay
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._due: asyncio.TimerHandle | None = None

    def later(self, line: str) -> None:
        if self._delay is None:
            self.now(line)
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()
        elif self._due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside a loop: no one to flush later
                self.flush()
            else:
                self._due = loop.call_later(self._delay, self.flush)

    def now(self, line: str) -> None:
        self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._size = 0
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()

    # -- a file for the standard library's handler --------------------------------------------
    def write(self, text: str) -> int:
        self.flush()
        stream = self._stream or sys.stderr
        return stream.write(text)


_WRITER: LineWriter | None = None
_SECRETS: tuple[str, ...] = ()


def flush_logs() -> None:
    """Write out the lines still waiting (at exit, and before the process is replaced)."""
    if _WRITER is not None:
        _WRITER.flush()


atexit.register(flush_logs)


class _LineLogger:
    """structlog's logger: the rendered line goes to the writer, at once from WARNING up."""

    __slots__ = ("_writer",)

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def debug(self, message: str) -> None:
        self._writer.later(message)

    info = debug

    def msg(self, message: str) -> None:
        self._writer.now(message)

    log = warning = warn = error = critical = exception = fatal = msg


def _route_stdlib(level: int, fmt: str, stream: LineWriter) -> None:
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
    delay: float | None = None,
) -> None:
    """Configure structlog (and the stdlib root logger) to write one line per event to `stream`.

    `stream` defaults to stderr; tests pass a StringIO to read the rendered lines. `cache`
    keeps each logger once built (much cheaper per line); tests that use
    `structlog.testing.capture_logs()` need it off, since that cannot reach cached loggers.
    `delay`: how long INFO and DEBUG lines may wait to go out together (see `LineWriter`);
    None writes each at once. `serve` passes LOG_FLUSH_SECONDS.
    """
    global _WRITER, _SECRETS  # noqa: PLW0603 - one writer per process, flushed at exit
    # The process's own secrets (`serve` passes its settings'); a running app lends its
    # secrets to REDACTOR for its lifetime (ActorSystem.start/close).
    REDACTOR.remove(_SECRETS)
    _SECRETS = tuple(secrets or ())
    REDACTOR.add(_SECRETS)
    flush_logs()
    writer = _WRITER = LineWriter(stream, delay=delay)
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            *_pre_chain(),
            structlog.processors.format_exc_info,
            _Redacted(_renderer(fmt)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: _LineLogger(writer),
        cache_logger_on_first_use=cache,
    )
    _route_stdlib(numeric, fmt, writer)
