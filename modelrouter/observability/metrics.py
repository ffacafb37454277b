"""Prometheus metrics. The seed's five names and labels are a contract; label values come from
closed sets (routes, providers, failure classes), never from what a client sends."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelrouter.observability.multiprocess import multiprocess_dir, multiprocess_exposition

# From a fast cache hit (tens of ms) to a long generation (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
STATE_VALUE = {"ok": 0, "half_open": 1, "blacklisted": 2, "down": 3}
STATE_BACKENDS = ("memory", "redis", "degraded")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelrouter_requests",
            "HTTP requests answered",
            ("route", "method", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "modelrouter_request_latency_seconds",
            "Time to answer a request, by route",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_failures = Counter(
            "modelrouter_provider_failures",
            "Failed attempts per provider and failure class",
            ("provider", "reason"),
            registry=r,
        )
        self.provider_success = Counter(
            "modelrouter_provider_success",
            "Successful attempts per provider",
            ("provider",),
            registry=r,
        )
        self.active_streams = Gauge(
            "modelrouter_active_streams",
            "Streams being relayed right now",
            registry=r,
            multiprocess_mode="livesum",  # serve --workers N: the sum over live workers
        )
        self.fallbacks = Counter(
            "modelrouter_fallbacks",
            "Requests moved from one provider to the next",
            ("from_provider", "to_provider", "reason"),
            registry=r,
        )
        self.provider_state = Gauge(
            "modelrouter_provider_state",
            "Provider health: 0 ok, 1 half-open, 2 blacklisted, 3 down",
            ("provider",),
            registry=r,
            multiprocess_mode="livemax",  # serve --workers N: the worst view among workers
        )
        self.actor_restarts = Counter(
            "modelrouter_actor_restarts",
            "Actor loops restarted by their supervisor",
            ("actor",),
            registry=r,
        )
        self.redis_errors = Counter(
            "modelrouter_redis_errors",
            "Redis calls that failed or timed out, by operation (served from local state)",
            ("op",),
            registry=r,
        )
        self.state_backend = Gauge(
            "modelrouter_state_backend",
            "1 for the state backend in use (memory, redis, or degraded: Redis away, local state)",
            ("backend",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def set_provider_state(self, provider: str, state: str) -> None:
        self.provider_state.labels(provider).set(STATE_VALUE[state])

    def set_state_backend(self, mode: str) -> None:
        for backend in STATE_BACKENDS:
            self.state_backend.labels(backend).set(1 if backend == mode else 0)

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_dir():  # serve --workers N: every worker's values, summed
            return multiprocess_exposition(), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
