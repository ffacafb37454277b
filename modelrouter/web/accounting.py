"""The end of each request: its metrics and its line, recorded in batches off its path."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from modelrouter.observability import Metrics
from modelrouter.web.runtime import REQUEST_ID, SUMMARY

log = structlog.get_logger("modelrouter.web")


class Accounting:
    """Each request's end (its metrics and its line), recorded in batches at most `delay`
    seconds later, off the request's path: the client has its answer by then (see
    docs/performance.md). `/metrics` drains first, so a scrape sees every finished request;
    so does shutdown.
    """

    def __init__(self, metrics: Metrics, *, delay: float = 0.002, limit: int = 256) -> None:
        self.metrics = metrics
        self.delay = delay
        self._limit = limit
        self._pending: list[tuple[web.Request, str, int, float, bool]] = []
        self._due: asyncio.TimerHandle | None = None

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
        for request, route, status, seconds, quiet in pending:
            metrics.observe_request(route, request.method, status, seconds)
            _finished(request, metrics, route=route, status=status, seconds=seconds, quiet=quiet)


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
            metrics.count_usage(provider, usage)
            fields.update(
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
    if summary.error is not None:
        fields["error"] = summary.error
    emit = log.debug if quiet else log.warning if status >= 500 else log.info
    emit(
        "request_finished",
        request_id=request[REQUEST_ID],  # drained later, outside the request's context
        route=route,
        method=request.method,
        status=status,
        **fields,
    )


ACCOUNTING = web.AppKey("accounting", Accounting)
