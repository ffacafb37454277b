"""The end of each request: its metrics, its line and its history row, recorded in batches
off its path."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec
import structlog
from aiohttp import web

from modelrouter.history import History, Record
from modelrouter.observability import Metrics
from modelrouter.observability.recent import ErrorEntry, Recent
from modelrouter.tenants.cost import usd, usd_text
from modelrouter.tenants.spend import SpendLog, SpendRow
from modelrouter.web.runtime import REQUEST_ID, SUMMARY, Summary

log = structlog.get_logger("modelrouter.web")
MAX_UNPRICED_LOGGED = 1024  # (provider, model) pairs said once each; past that, the metric alone
# What the history keeps: the answered routes (not probes, listings or history reads), and
# not requests without a client (401).
HISTORY_ROUTES = frozenset(
    {
        "/chat",
        "/stream",
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
    }
)
# Not in the console's list of errors: its own polling, and paths that match no route.
UNLISTED_PREFIXES = ("/admin", "/ui", "unmatched")


class Accounting:
    """Each request's end (its metrics and its line), recorded in batches at most `delay`
    seconds later, off the request's path: the client has its answer by then (see
    docs/performance.md). `/metrics` drains first, so a scrape sees every finished request;
    so does shutdown.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        recent: Recent | None = None,
        delay: float = 0.002,
        limit: int = 256,
    ) -> None:
        self.metrics = metrics
        self.recent = recent  # the console's figures of this replica (None: not recorded)
        self.delay = delay
        self._limit = limit
        self._pending: list[tuple[web.Request, str, int, float, bool]] = []
        self._due: asyncio.TimerHandle | None = None
        self.history: History | None = None  # set for the app's lifetime when DATABASE_URL is
        self.spend: SpendLog | None = None  # likewise: each priced request's spend row
        self.key_labels = False  # METRICS_KEY_LABELS: spend per key in the metrics too
        self._unpriced: set[tuple[str, str]] = set()  # said once each in the log

    def add(
        self, request: web.Request, route: str, status: int, seconds: float, quiet: bool
    ) -> None:
        self._pending.append((request, route, status, seconds, quiet))
        if len(self._pending) >= self._limit:
            self.drain()
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_later(self.delay, self.drain)

    def drain(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        pending, self._pending = self._pending, []
        metrics = self.metrics
        # Wall time of arrival, from the monotonic times the requests noted.
        offset = time.time() - time.perf_counter()
        for request, route, status, seconds, quiet in pending:
            metrics.observe_request(route, request.method, status, seconds)
            _finished(request, metrics, route=route, status=status, seconds=seconds, quiet=quiet)
            self._count_cost(request[SUMMARY])
            if not quiet and self.recent is not None:
                self._note(request, route, status, seconds, offset, recent=self.recent)
        history, spend = self.history, self.spend
        if history is not None:
            for request, route, status, seconds, _ in pending:
                if route in HISTORY_ROUTES and status != 401:
                    history.add(record(request, route, status, seconds, offset))
        if spend is not None:
            for request, *_ in pending:
                row = spend_row(request, offset)
                if row is not None:
                    spend.add(row)

    def _note(
        self,
        request: web.Request,
        route: str,
        status: int,
        seconds: float,
        offset: float,
        *,
        recent: Recent,
    ) -> None:
        """The console's figures: the deployment's time to first byte, the cache's answer, the
        request in the last errors if it failed (what and where only)."""
        summary: Summary = request[SUMMARY]
        answering = summary.answering
        at = summary.started + offset
        if summary.cache is not None:
            recent.count_cache(summary.cache)
        failed = status >= 400 or summary.error is not None
        if answering is not None and not failed and summary.cache != "hit":
            first_byte = summary.first_byte
            ring = recent.ring(answering.provider)
            ring.first_byte(seconds if first_byte is None else first_byte, at)
        if failed and not route.startswith(UNLISTED_PREFIXES):
            recent.errors.append(
                ErrorEntry(
                    at=round(at, 3),
                    request_id=request[REQUEST_ID],
                    route=route,
                    status=status,
                    type=summary.error,
                    provider=answering.provider or None if answering is not None else None,
                    model=answering.model or None if answering is not None else None,
                    attempts=answering.attempt if answering is not None else 0,
                    client=summary.client,
                )
            )

    def _count_cost(self, summary: Summary) -> None:
        """The spend metric, and an unpriced model counted (and said once)."""
        charge, answering = summary.cost, summary.answering
        if charge is None or answering is None or summary.cache == "hit":
            return
        provider, model = answering.provider, answering.model
        self.metrics.count_cost(provider, model, charge.nanos, priced=charge.priced)
        if self.key_labels and charge.nanos:
            team = summary.identity.team if summary.identity is not None else None
            self.metrics.key_spend.labels(summary.client, team or "").inc(usd(charge.nanos))
        pair = (provider, model)
        unseen = pair not in self._unpriced and len(self._unpriced) < MAX_UNPRICED_LOGGED
        if not charge.priced and unseen:
            self._unpriced.add(pair)
            log.warning(
                "model_unpriced",
                provider=provider,
                model=model,
                detail="no price in the table or PRICES_FILE: its requests cost 0",
            )


def _finished(
    request: web.Request,
    metrics: Metrics,
    *,
    route: str,
    status: int,
    seconds: float,
    quiet: bool,
) -> None:
    """The request's end line (the one to read) and its token counts."""
    summary = request[SUMMARY]
    answering, usage = summary.answering, summary.usage
    fields: dict[str, object] = {"latency_ms": round(seconds * 1000, 1)}
    if answering is not None:
        provider = answering.provider
        fields.update(provider=provider, model=answering.model, attempts=answering.attempt)
        if usage is not None:
            # A replayed answer cost the provider nothing; an estimate is not what a provider
            # reported (its cost is counted, in the spend).
            if summary.cache != "hit" and not usage.estimated:
                metrics.count_usage(provider, usage)
            fields.update(
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
    cost = summary.cost
    if cost is not None:
        fields["cost_usd"] = usd_text(cost.nanos)
        if not cost.priced:
            fields["unpriced"] = True
        if cost.estimated:
            fields["usage_estimated"] = True
    if summary.error is not None:
        fields["error"] = summary.error
    if summary.cache is not None:
        fields["cache"] = summary.cache
    emit = log.debug if quiet else log.warning if status >= 500 else log.info
    emit(
        "request_finished",
        request_id=request[REQUEST_ID],  # drained later, outside the request's context
        route=route,
        method=request.method,
        status=status,
        **fields,
    )


_encode = msgspec.json.Encoder().encode


def record(request: web.Request, route: str, status: int, seconds: float, offset: float) -> Record:
    """The request's history row (`offset`: wall time less monotonic time, now)."""
    summary: Summary = request[SUMMARY]
    answering, usage = summary.answering, summary.usage
    latency_ms = seconds * 1000
    first_byte = summary.first_byte
    ttfb_ms = latency_ms if first_byte is None else first_byte * 1000
    chat, text, hints = summary.chat, summary.text, summary.hints
    return Record(
        request_id=request[REQUEST_ID],
        created_at=datetime.fromtimestamp(summary.started + offset, UTC),
        client_id=summary.client,
        route=route,
        provider=answering.provider or None if answering is not None else None,
        model=answering.model or None if answering is not None else None,
        attempts=answering.attempt if answering is not None else 0,
        status=status,
        error_type=summary.error,
        prompt_tokens=usage.prompt_tokens if usage is not None else None,
        completion_tokens=usage.completion_tokens if usage is not None else None,
        latency_ms=latency_ms,
        ttfb_ms=ttfb_ms,
        cache=summary.cache,
        cost_nanos=summary.cost.nanos if summary.cost is not None else None,
        usage_estimated=summary.cost.estimated if summary.cost is not None else None,
        messages=_encode(chat.messages).decode() if chat is not None else None,
        answer="".join(text) if text is not None else None,
        hedge=hints.outcome if hints is not None else None,
        continued_from=hints.continued_from if hints is not None else None,
    )


def spend_row(request: web.Request, offset: float) -> SpendRow | None:
    """The request's spend (the same integer as its history row), if a provider answered."""
    summary: Summary = request[SUMMARY]
    cost, answering = summary.cost, summary.answering
    if cost is None or answering is None or not answering.provider:
        return None
    identity = summary.identity
    return SpendRow(
        created_at=datetime.fromtimestamp(summary.started + offset, UTC),
        key_id=summary.client,
        team=None if identity is None else identity.team,
        provider=answering.provider,
        model=answering.model,
        cost_nanos=cost.nanos,
        request_id=request[REQUEST_ID],
    )


ACCOUNTING = web.AppKey("accounting", Accounting)
