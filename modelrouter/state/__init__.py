"""Shared state: rate budgets, leases and provider health (memory or Redis backend)."""

from modelrouter.state.base import HealthListener, HealthRecord, Lease, RateDecision, SharedState
from modelrouter.state.factory import create_state
from modelrouter.state.memory import MemoryState

__all__ = [
    "HealthListener",
    "HealthRecord",
    "Lease",
    "MemoryState",
    "RateDecision",
    "SharedState",
    "create_state",
]
