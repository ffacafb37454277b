"""Metrics and structured logs."""

from modelrouter.observability.logging import CURRENT_REQUEST_ID, REDACTOR, configure_logging
from modelrouter.observability.metrics import Metrics

__all__ = ["CURRENT_REQUEST_ID", "REDACTOR", "Metrics", "configure_logging"]
