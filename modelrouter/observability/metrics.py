"""Prometheus metrics. The seed's five names and labels are a contract; label values come from
closed sets (routes, provider names, failure classes, scopes), never from what a client sends.

Hot path: everything a request touches per provider is bound once, in `ProviderMetrics`, when the
provider actor is built; a request then only calls `.inc()` / `.observe()` on ready children.
Gauges that describe a state (provider health, mailbox depth) are set at scrape time instead.
"""

from __future__ import annotations

from typing import Final, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from modelrouter.events import FailureReason, Usage
from modelrouter.observability.multiprocess import multiprocess_dir, multiprocess_exposition

# `*_created` series double the page and no dashboard or alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# From a health check (milliseconds) to a long generation (minutes).
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
)  # fmt: skip
# Time to first chunk: finer around FIRST_CHUNK_TIMEOUT (3 s by default), capped at a minute.
TTFC_BUCKETS: Final = (
    0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60,
)  # fmt: skip
STATE_VALUE: Final = {"ok": 0, "half_open": 1, "blacklisted": 2, "down": 3}
FAILURE_REASONS: Final[tuple[str, ...]] = get_args(FailureReason)
SCOPE_ALL_PROVIDERS: Final = "all_providers"
SCOPE_STREAMS: Final = "streams"
STATE_BACKENDS: Final = ("memory", "redis", "degraded")
CACHE_RESULTS: Final = ("hit", "miss", "bypass")
HISTORY_OPS: Final = ("migrate", "write", "purge")
# Distinct (provider, model) pairs with their own spend series; later ones are counted under
# model="other". The models are those that answered, but a provider may answer any name.
MAX_COST_SERIES: Final = 256
OTHER_MODEL: Final = "other"


class ProviderMetrics:
    """One provider's children, bound once (`.labels()` is never called per request)."""

    __slots__ = (
        "budget",
        "completion_tokens",
        "failures",
        "prompt_tokens",
        "rate_rejected",
        "success",
        "ttfc",
        "upstream_error",
        "upstream_ok",
    )

    def __init__(self, metrics: Metrics, name: str, *, rate_limited: bool) -> None:
        self.success = metrics.provider_success.labels(name)
        self.failures = {r: metrics.provider_failures.labels(name, r) for r in FAILURE_REASONS}
        self.ttfc = metrics.time_to_first_chunk.labels(name)
        self.upstream_ok = metrics.upstream_latency.labels(name, "ok")
        self.upstream_error = metrics.upstream_latency.labels(name, "error")
        self.rate_rejected = metrics.rate_limit_rejections.labels(name)
        # An unlimited provider has no budget: no series, rather than a misleading 0 or 2^30.
        self.budget = metrics.rate_budget_remaining.labels(name) if rate_limited else None
        self.prompt_tokens = metrics.tokens.labels(name, "prompt")
        self.completion_tokens = metrics.tokens.labels(name, "completion")
        metrics.provider_state.labels(name).set(0)
        metrics.actor_restarts.labels(name)

    def set_budget(self, remaining: int) -> None:
        if self.budget is not None:
            self.budget.set(remaining)

    def count_usage(self, usage: Usage) -> None:
        if usage.prompt_tokens:
            self.prompt_tokens.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.completion_tokens.inc(usage.completion_tokens)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        # -- the seed's five -----------------------------------------------------------------
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
        # -- beside them ---------------------------------------------------------------------
        self.time_to_first_chunk = Histogram(
            "modelrouter_time_to_first_chunk_seconds",
            "Streams: from the request's arrival to its first chunk sent, by answering provider",
            ("provider",),
            buckets=TTFC_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "modelrouter_upstream_latency_seconds",
            "One attempt's upstream call, start to end, by provider and outcome (ok or error)",
            ("provider", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "modelrouter_fallbacks",
            "Requests moved from a failed provider to the next one tried",
            ("from_provider", "to_provider", "reason"),
            registry=r,
        )
        self.provider_state = Gauge(
            "modelrouter_provider_state",
            "Provider health: 0 ok, 1 half-open, 2 blacklisted, 3 down (restarts exhausted)",
            ("provider",),
            registry=r,
            multiprocess_mode="livemax",  # serve --workers N: the worst view among workers
        )
        self.rate_budget_remaining = Gauge(
            "modelrouter_rate_budget_remaining",
            "Requests a provider's rate budget still allowed at its last admission",
            ("provider",),
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "modelrouter_rate_limit_rejections",
            "Rejections by our own limits: a provider's budget (scope = provider), every "
            "provider's budget (all_providers, a 429), MAX_CONCURRENT_STREAMS (streams, a 429)",
            ("scope",),
            registry=r,
        )
        self.key_rejections = Counter(
            "modelrouter_key_rejections",
            "Client requests refused for their key: unknown, revoked, rotated, expired, "
            "disabled, rate_limited, tpm, streams, model_not_allowed, unavailable",
            ("reason",),
            registry=r,
        )
        self.tokens = Counter(
            "modelrouter_tokens",
            "Tokens reported by providers, by kind (prompt or completion)",
            ("provider", "kind"),
            registry=r,
        )
        self.spend = Counter(
            "modelrouter_spend_usd",
            "USD spent at the providers (usage at the price table's prices; cache hits cost 0)",
            ("provider", "model"),
            registry=r,
        )
        self.unpriced = Counter(
            "modelrouter_unpriced_requests",
            "Answered requests whose model has no price (counted as costing 0)",
            ("provider", "model"),
            registry=r,
        )
        self._cost_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self.actor_restarts = Counter(
            "modelrouter_actor_restarts",
            "Actor loops restarted by their supervisor",
            ("actor",),
            registry=r,
        )
        self.mailbox_depth = Gauge(
            "modelrouter_actor_mailbox_depth",
            "Messages waiting in an actor's mailbox",
            ("actor",),
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "modelrouter_requests_in_flight",
            "Requests being routed right now (one process takes 10,000; past that, a 503)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected_all_providers = self.rate_limit_rejections.labels(SCOPE_ALL_PROVIDERS)
        self.rejected_streams = self.rate_limit_rejections.labels(SCOPE_STREAMS)
        self.providers: dict[str, ProviderMetrics] = {}
        self.redis_errors = Counter(
            "modelrouter_redis_errors",
            "Redis calls that failed or timed out, by operation (served from local state)",
            ("op",),
            registry=r,
        )
        self.state_backend = Gauge(
            "modelrouter_state_backend",
            "1 for the state backend in use (memory, redis, or degraded: Redis away, local state)",
            ("mode",),
            registry=r,
            multiprocess_mode="livemax",
        )
        # -- client connections and what must not leak (web/connections.py, SECURITY.md) -----
        self.open_connections = Gauge(
            "modelrouter_open_connections",
            "Client connections open now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connection_limit = Gauge(
            "modelrouter_connection_limit",
            "MAX_CONNECTIONS: past it a new client connection is closed at once",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected_connections = Counter(
            "modelrouter_rejected_connections",
            "New client connections closed at once: MAX_CONNECTIONS open, none of them idle",
            registry=r,
        )
        self.evicted_connections = Counter(
            "modelrouter_evicted_connections",
            "Idle client connections closed to admit a new one at MAX_CONNECTIONS",
            registry=r,
        )
        self.connection_timeouts = Counter(
            "modelrouter_connection_timeouts",
            "Client connections closed by a timeout: header (HEADER_TIMEOUT_SECONDS, a 408) "
            "or keepalive (KEEPALIVE_TIMEOUT_SECONDS, idle)",
            ("kind",),
            registry=r,
        )
        for kind in ("header", "keepalive"):
            self.connection_timeouts.labels(kind)
        self.bad_http_requests = Counter(
            "modelrouter_bad_http_requests",
            "Requests the HTTP parser rejected (a 400, the connection closed)",
            registry=r,
        )
        self.event_loop_tasks = Gauge(
            "modelrouter_event_loop_tasks",
            "asyncio tasks alive in the process (set at scrape time)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upstream_idle_connections = Gauge(
            "modelrouter_upstream_idle_connections",
            "Upstream connections idle in a provider's pool (set at scrape time)",
            ("provider",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self._cache_and_history(r)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._fallback_children: dict[tuple[str, str, str], Counter] = {}

    def _cache_and_history(self, r: CollectorRegistry) -> None:
        """The response cache's and the history writer's metrics (exposed even when off, so
        dashboards and alerts read zeros rather than nothing)."""
        self.cache_requests = Counter(
            "modelrouter_cache_requests",
            "Requests by what the response cache did: hit (stored, or coalesced with an "
            "identical request in flight), miss (went upstream), bypass (not looked up)",
            ("result",),
            registry=r,
        )
        self.cache_result = {result: self.cache_requests.labels(result) for result in CACHE_RESULTS}
        self.cache_coalesced = Counter(
            "modelrouter_cache_coalesced",
            "Requests answered by an identical request's upstream call in flight (also hits)",
            registry=r,
        )
        self.cache_evictions = Counter(
            "modelrouter_cache_evictions",
            "Answers evicted from the in-memory cache to stay within CACHE_MAX_BYTES",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "modelrouter_cache_bytes",
            "Bytes held by the in-memory response cache",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_redis_errors = Counter(
            "modelrouter_cache_redis_errors",
            "Response cache calls to Redis that failed or timed out (the cache is off meanwhile)",
            registry=r,
        )
        self.history_rows = Counter(
            "modelrouter_history_rows",
            "Request records written to the history database",
            registry=r,
        )
        self.history_dropped = Counter(
            "modelrouter_history_dropped",
            "Request records dropped (oldest first) because the history queue was full",
            registry=r,
        )
        self.history_rejected = Counter(
            "modelrouter_history_rejected",
            "Request records dropped because the history database refused a value in them "
            "(the rest of their batch was written)",
            registry=r,
        )
        self.history_errors = Counter(
            "modelrouter_history_errors",
            "History database operations that failed (migrate: connect and schema, write, purge)",
            ("op",),
            registry=r,
        )
        for op in HISTORY_OPS:
            self.history_errors.labels(op)
        self.history_queue = Gauge(
            "modelrouter_history_queue_rows",
            "Request records waiting to be written to the history database",
            registry=r,
            multiprocess_mode="livesum",
        )

    def provider(self, name: str, *, rate_limited: bool = True) -> ProviderMetrics:
        """The provider's bound children (made on first call, when its actor is built)."""
        bound = self.providers.get(name)
        if bound is None:
            bound = self.providers[name] = ProviderMetrics(self, name, rate_limited=rate_limited)
        return bound

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

    def count_fallback(self, from_provider: str, to_provider: str, reason: str) -> None:
        key = (from_provider, to_provider, reason)
        counter = self._fallback_children.get(key)
        if counter is None:
            counter = self._fallback_children[key] = self.fallbacks.labels(*key)
        counter.inc()

    def observe_first_chunk(self, provider: str, seconds: float) -> None:
        bound = self.providers.get(provider)
        if bound is not None:
            bound.ttfc.observe(seconds)

    def count_usage(self, provider: str, usage: Usage) -> None:
        bound = self.providers.get(provider)
        if bound is not None:
            bound.count_usage(usage)

    def count_cost(self, provider: str, model: str, nanos: int, *, priced: bool) -> None:
        """One answered request's cost (off the request path: from the accounting's drain)."""
        children = self._cost_children.get((provider, model))
        if children is None:
            label = model if len(self._cost_children) < MAX_COST_SERIES else OTHER_MODEL
            children = (self.spend.labels(provider, label), self.unpriced.labels(provider, label))
            if label != OTHER_MODEL:
                self._cost_children[provider, model] = children
        if not priced:
            children[1].inc()
        elif nanos:
            children[0].inc(nanos / 1_000_000_000)

    def actor_restarted(self, actor: str) -> None:
        self.actor_restarts.labels(actor).inc()

    # -- set at scrape time ---------------------------------------------------------------------
    def set_provider_state(self, provider: str, state: str) -> None:
        self.provider_state.labels(provider).set(STATE_VALUE[state])

    def set_mailbox_depth(self, actor: str, depth: int) -> None:
        self.mailbox_depth.labels(actor).set(depth)

    def set_state_backend(self, mode: str) -> None:
        for backend in STATE_BACKENDS:
            self.state_backend.labels(backend).set(1 if backend == mode else 0)

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_dir():  # serve --workers N: every worker's values, summed
            return multiprocess_exposition(), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
