"""A virtual key's limits on the request path: admission before routing (a 429 with
Retry-After in the route family's format when over one), and the settle when the request ends.
Requests with a static key, or with a key without limits, do nothing here."""

from __future__ import annotations

from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.identity import Identity
from modelrouter.tenants.limits import Hold, Limited
from modelrouter.web.runtime import SUMMARY, Runtime, Summary

_TYPES = {
    "rate_limited": "rate_limited",
    "tpm": "tokens_rate_limited",
    "streams": "too_many_streams",
}


async def admit_key(
    request: web.Request, runtime: Runtime, chat: ChatRequest, *, stream: bool
) -> Hold | None:
    identity = request[SUMMARY].identity
    key = None if identity is None else identity.key
    if key is None or runtime.key_limits is None:
        return None
    try:
        return await runtime.key_limits.admit(key, chat, stream=stream)
    except Limited as exc:
        runtime.metrics.key_rejections.labels(exc.reason).inc()
        raise ApiError(
            429, _TYPES[exc.reason], exc.message, retry_after=max(exc.retry_after, 0.001)
        ) from None


def settle_key(runtime: Runtime, hold: Hold, summary: Summary) -> None:
    """The reservation becomes what the request used (nothing: a failure, a cache hit)."""
    usage = summary.usage
    used = None if usage is None or summary.cache == "hit" else usage.total_tokens
    assert runtime.key_limits is not None  # a hold came from it
    runtime.key_limits.settle(hold, used)


def model_allow(identity: Identity | None) -> tuple[str, ...]:
    """The request's model allow-list: a virtual key's `models` (empty: all)."""
    key = None if identity is None else identity.key
    return () if key is None else key.models


def count_refusal(runtime: Runtime, error: ApiError) -> None:
    """A model outside the key's allow-list (the plan's 403) counts as the key's rejection."""
    if error.type == "model_not_allowed":
        runtime.metrics.key_rejections.labels("model_not_allowed").inc()
