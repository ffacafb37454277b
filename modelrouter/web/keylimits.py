"""A virtual key's door on the request path: admission before routing against its limits (a
429 with Retry-After in the route family's format when over one) and its budget
(`web.budget`), and the settle when the request ends. Requests with a static key do nothing
here."""

from __future__ import annotations

from modelrouter.errors import ApiError
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.identity import Identity
from modelrouter.tenants.keys import Key
from modelrouter.tenants.limits import Hold, Limited, token_ceiling
from modelrouter.web.budget import REFUSALS, refusal
from modelrouter.web.runtime import Runtime, Summary

_TYPES = {
    "rate_limited": "rate_limited",
    "tpm": "tokens_rate_limited",
    "streams": "too_many_streams",
}


async def admit_key(
    runtime: Runtime, summary: Summary, key: Key, chat: ChatRequest, *, stream: bool
) -> Hold | None:
    """The request's holds on its virtual key: its limits (rpm, tpm, streams; the Hold, None
    when it has none), then its budget's worst case (on `summary.admission`). Refused (a 429,
    or the budget's 403 or 503), nothing is held.

    The request's token ceiling is computed once, for both: its output is max_tokens, else
    the model's output limit (the price table's `max_output`, the largest of the candidates'),
    else BUDGET_RESERVE_TOKENS. With the embedded state and in-process ledger nothing here
    suspends: the only coroutine is this one."""
    limits, gate = runtime.key_limits, runtime.budgets
    budgeted = key.budget_nanos is not None and gate is not None
    tokens, top = 0, None
    if key.tpm is not None or budgeted:
        output = runtime.settings.tenants.budget_reserve_tokens
        if gate is not None:
            top = gate.top(chat, key.models)  # the candidates' top rate and output limit
            output = top[1] or output
        tokens = token_ceiling(chat, default_output=output)
    hold = None
    if limits is not None:
        try:
            if limits.memory is not None:
                hold = limits.admit_now(key, tokens, stream=stream)
            else:
                hold = await limits.admit(key, chat, stream=stream, tokens=tokens)
        except Limited as exc:
            runtime.metrics.key_rejections.labels(exc.reason).inc()
            raise ApiError(
                429, _TYPES[exc.reason], exc.message, retry_after=max(exc.retry_after, 0.001)
            ) from None
    if budgeted:
        assert gate is not None
        assert top is not None
        try:
            amount = gate.amount(chat, tokens, top)
            admission = gate.reserve_now(key, amount)
            if admission is None:
                admission = await gate.reserve(key, chat, amount=amount)
        except BaseException as exc:
            if hold is not None:
                settle_key(runtime, hold, None)  # nothing used: all given back
            if isinstance(exc, REFUSALS):
                raise refusal(runtime, key, exc) from None
            raise
        summary.admission = admission
    return hold


def settle_key(runtime: Runtime, hold: Hold, summary: Summary | None) -> None:
    """The reservation becomes what the request used (nothing: a failure, a cache hit, or
    no summary: a request refused after its hold was taken)."""
    usage = None if summary is None else summary.usage
    used = (
        None if usage is None or summary is None or summary.cache == "hit" else usage.total_tokens
    )
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
