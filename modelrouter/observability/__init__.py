"""Metrics, structured logs and traces (`tracing`: read its `ENABLED` flag as an attribute)."""

from modelrouter.observability import tracing
from modelrouter.observability.logging import CURRENT_REQUEST_ID, REDACTOR, configure_logging
from modelrouter.observability.metrics import Metrics

__all__ = ["CURRENT_REQUEST_ID", "REDACTOR", "Metrics", "configure_logging", "tracing"]
