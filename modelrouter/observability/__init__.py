"""Metrics and structured logs."""

from modelrouter.observability.logging import REDACTOR, configure_logging
from modelrouter.observability.metrics import Metrics

__all__ = ["REDACTOR", "Metrics", "configure_logging"]
