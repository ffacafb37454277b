"""structlog set-up: one JSON line per event, `request_id` from contextvars, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from modelrouter.redact import Redactor

REDACTOR = Redactor()


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Redact every string value: upstream errors may echo back the credential they received."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = REDACTOR(value)
    return event


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", secrets: list[str] | None = None
) -> None:
    if secrets:
        REDACTOR.add(secrets)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,  # keeps structlog.testing.capture_logs() reliable,
    )
