"""Shared state: rate budgets, leases and provider health (memory or Redis backend)."""

from modelrouter.state.base import HealthRecord, Lease, RateDecision, SharedState
from modelrouter.state.memory import MemoryState

__all__ = ["HealthRecord", "Lease", "MemoryState", "RateDecision", "SharedState"]
