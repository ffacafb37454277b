"""The fallback walk of one request: ask each candidate in turn, await its attempt, decide.

Done when an attempt succeeds; on to the next candidate after a failure that happened before
anything reached the client; otherwise the final error, with the status that says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import structlog

from modelrouter.actors.messages import Admission, Attempt, AttemptResult, Route
from modelrouter.events import Done, Failed
from modelrouter.observability import Metrics
from modelrouter.routing import Candidate

log = structlog.get_logger("modelrouter.router")
TIMEOUT_REASONS = frozenset({"timeout", "first_chunk_timeout"})


class Fallback:
    def __init__(
        self,
        route: Route,
        candidates: list[Candidate],
        *,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        redact: Callable[[str], str],
    ) -> None:
        self.route = route
        self.candidates = candidates
        self.loop = loop
        self.metrics = metrics
        self.redact = redact
        self.attempts = 0
        self.failures: list[tuple[str, AttemptResult]] = []
        self.rejections: list[tuple[Candidate, Admission]] = []
        self.falling_over: tuple[str, str] | None = None  # (failed provider, reason)

    async def run(self) -> Done | Failed:
        for candidate in self.candidates:
            ended = await self._try(candidate, force=False)
            if ended is not None:
                return ended
        return await self._last_resort()

    async def _last_resort(self) -> Done | Failed:
        """Every candidate was walked: the final error, unless every one was out."""
        if not self.failures:
            # Everyone is out. Rather than fail at once, try the one whose blacklist ends first.
            out = [
                (c, a) for c, a in self.rejections if a.rejection in ("blacklisted", "half_open")
            ]
            if out:
                candidate = min(out, key=lambda pair: pair[1].retry_after)[0]
                ended = await self._try(candidate, force=True)
                if ended is not None:
                    return ended
        return self._verdict()

    async def _try(self, candidate: Candidate, *, force: bool) -> Done | Failed | None:
        """Run one attempt; a final event ends the walk, None moves to the next candidate."""
        route = self.route
        if self.loop.time() >= route.deadline:
            return Failed(504, "timeout", "the request deadline passed before an answer")
        attempt = Attempt(
            route.request,
            candidate.model,
            route.relay,
            route.stream,
            route.deadline,
            route.request_id,
            self.attempts + 1,
            force,
        )
        actor = candidate.actor
        # Cancelled with this task (the client left): the attempt stops with it, in one hop.
        result = await actor.attempt(attempt, admitted=partial(self._admitted, actor.name))
        if type(result) is Admission:
            self.rejections.append((candidate, result))
            return None
        assert isinstance(result, AttemptResult)
        return self._judge(actor.name, result)

    def _admitted(self, provider: str) -> None:
        self.attempts += 1
        if self.falling_over is not None:  # counted now that the next attempt really starts
            self._count_fallback(*self.falling_over, provider)
            self.falling_over = None

    def _judge(self, provider: str, result: AttemptResult) -> Done | Failed | None:
        if result.ok:
            return Done(result.finish_reason)
        if result.reason is None:  # the upstream rejected the request itself
            message = self.redact(result.message)
            return Failed(result.status or 400, "invalid_request", message, retryable=False)
        self.failures.append((provider, result))
        log.warning(
            "attempt_failed",
            provider=provider,
            reason=result.reason,
            status=result.status,
            detail=self.redact(result.message),
        )
        if result.emitted:
            message = f"{provider} failed mid-stream: {result.reason}: {result.message}"
            return Failed(502, "upstream_error", self.redact(message), retryable=True)
        if not self.route.request.fallback:
            return self._verdict()
        self.falling_over = (provider, result.reason)
        return None

    def _count_fallback(self, failed: str, reason: str, next_provider: str) -> None:
        self.metrics.count_fallback(failed, next_provider, reason)
        log.info("fallback", from_provider=failed, to_provider=next_provider, reason=reason)

    def _verdict(self) -> Failed:
        """The final error when no attempt succeeded. Every candidate that could be tried was
        tried and failed: sending the same request again now would only repeat that."""
        if self.failures:
            details = "; ".join(f"{name}: {r.reason} ({r.message})" for name, r in self.failures)
            if all(r.reason in TIMEOUT_REASONS for _, r in self.failures):
                message = self.redact(f"every provider timed out: {details}")
                return Failed(504, "timeout", message, retryable=False)
            if all(r.reason == "rate_limited" for _, r in self.failures):
                # Every provider tried said 429: a retry helps, after the shortest wait given.
                return self._rate_limited(f"every provider is rate limited: {details}")
            if all(r.reason == "model_not_found" for _, r in self.failures):
                message = self.redact(f"no provider has the model: {details}")
                return Failed(404, "model_not_found", message, param="model", retryable=False)
            message = self.redact(f"every provider failed: {details}")
            return Failed(502, "upstream_error", message, retryable=False)
        if any(a.rejection == "rate_limited" for _, a in self.rejections):
            return self._rate_limited("every provider is out of rate budget")
        wait = min((a.retry_after for _, a in self.rejections), default=1.0)
        states = ", ".join(f"{c.actor.name}: {a.rejection}" for c, a in self.rejections)
        message = f"no provider can take the request ({states})"
        return Failed(503, "unavailable", message, wait, retryable=True)

    def _rate_limited(self, message: str) -> Failed:
        """A 429 with the shortest wait any provider gave (its Retry-After, or its budget's)."""
        waits = [r.retry_after for _, r in self.failures if r.retry_after is not None]
        waits += [a.retry_after for _, a in self.rejections if a.rejection == "rate_limited"]
        self.metrics.rejected_all_providers.inc()
        wait = min(waits, default=1.0)
        return Failed(429, "rate_limited", self.redact(message), wait, retryable=True)
