"""The fallback walk of one request: ask each candidate in turn, await its attempt, decide.

Done when an attempt succeeds; on to the next candidate after a failure that happened before
anything reached the client; otherwise the final error, with the status that says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from modelrouter.actors.base import ActorStopped, MailboxFull
from modelrouter.actors.messages import Admission, Attempt, AttemptResult, Route
from modelrouter.actors.planning import Candidate
from modelrouter.actors.provider import DOWN_RETRY_AFTER
from modelrouter.events import Done, Failed
from modelrouter.observability import Metrics

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
        try:
            admission: Admission = await candidate.actor.ask(
                attempt, timeout=max(0.001, route.deadline - self.loop.time())
            )
        except ActorStopped:
            self.rejections.append((candidate, Admission("down", retry_after=DOWN_RETRY_AFTER)))
            return None
        except (MailboxFull, TimeoutError):
            self.rejections.append((candidate, Admission("saturated", retry_after=1.0)))
            return None
        if admission.result is None:
            self.rejections.append((candidate, admission))
            return None
        self.attempts += 1
        if self.falling_over is not None:  # counted now that the next attempt really started
            self._count_fallback(*self.falling_over, candidate.actor.name)
            self.falling_over = None
        # Cancelled with this task (the client left): the provider then stops the attempt.
        return self._judge(candidate.actor.name, await admission.result)

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
            message = self.redact(f"every provider failed: {details}")
            return Failed(502, "upstream_error", message, retryable=False)
        limited = [a.retry_after for _, a in self.rejections if a.rejection == "rate_limited"]
        if limited:
            wait = min(limited)
            self.metrics.rejected_all_providers.inc()
            return Failed(
                429, "rate_limited", "every provider is out of rate budget", wait, retryable=True
            )
        wait = min((a.retry_after for _, a in self.rejections), default=1.0)
        states = ", ".join(f"{c.actor.name}: {a.rejection}" for c, a in self.rejections)
        message = f"no provider can take the request ({states})"
        return Failed(503, "unavailable", message, wait, retryable=True)
