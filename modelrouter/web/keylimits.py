"""A virtual key's door on the request path: admission before routing against its limits (a
429 with Retry-After in the route family's format when over one) and its budget
(`web.budget`), and the settle when the request ends. Requests with a static key do nothing
here."""

from __future__ import annotations

from modelrouter.errors import ApiError
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.gate import Unpriced
from modelrouter.tenants.holds import Hold, Limited
from modelrouter.tenants.identity import Identity
from modelrouter.tenants.keys import Key
from modelrouter.web.budget import REFUSALS, refusal, settle
from modelrouter.web.runtime import Runtime, Summary

_TYPES = {
    "rate_limited": "rate_limited",
    "tpm": "tokens_rate_limited",
    "streams": "too_many_streams",
}


def take_key(
    runtime: Runtime, summary: Summary, key: Key, chat: ChatRequest, *, stream: bool
) -> Hold | None:
    """The request's holds on its virtual key with the embedded state, with no coroutine:
    its meter's (`tenants.meter`) limits and budget in one call. The Hold `waits` when its
    budget's period is not loaded yet; None with the shared state (Redis). In both cases
    `admit_rest` finishes the admission (`admit_key` is the two in one).

    The request's token ceiling is computed once, for the limits and the budget: its prompt
    bounded above, and its output: max_tokens, else the model's output limit (the price
    table's `max_output`, the largest of the candidates'), else BUDGET_RESERVE_TOKENS."""
    limits = runtime.key_limits
    assert limits is not None  # virtual keys come with their limits
    meters = limits.meters
    if meters is None:
        return None
    meter = meters.by_id.get(key.id)
    if meter is None or meter.key is not key:
        meter = meters.of(key)
    try:
        hold = meter.admit(chat, stream)
    except Limited as exc:
        raise limited(runtime, exc) from None
    except REFUSALS as exc:
        raise refusal(runtime, key, exc) from None
    if hold.account is not None:  # held: the stream's header says what is left after it
        summary.budget_left = hold.left
    return hold


async def admit_rest(
    runtime: Runtime,
    summary: Summary,
    key: Key,
    chat: ChatRequest,
    hold: Hold | None,
    *,
    stream: bool,
) -> Hold | None:
    """What `take_key` left to do: with the shared state, all of it; else the budget of a
    period whose spend is loaded first (`BudgetGate.reserve`). Refused (a 429, or the
    budget's 403 or 503), nothing is held."""
    if hold is None:
        return await _admit_shared(runtime, summary, key, chat, stream=stream)
    gate, meter = runtime.budgets, hold.meter
    assert gate is not None  # a meter's hold that waits for its budget: a budget here
    assert meter is not None
    try:
        hold.admission = await gate.reserve(key, chat, amount=hold.amount)
    except BaseException as exc:
        meter.settle(hold, None, 0)  # nothing used: all given back
        if isinstance(exc, REFUSALS):
            raise refusal(runtime, key, exc) from None
        raise
    summary.admission = hold.admission
    return hold


async def admit_key(
    runtime: Runtime, summary: Summary, key: Key, chat: ChatRequest, *, stream: bool
) -> Hold | None:
    """The request's holds on its virtual key: its limits (rpm, tpm, streams; the Hold, None
    when it has none), then its budget's worst case. Refused, nothing is held. The request
    path calls its two steps itself (`take_key`, then `admit_rest` only when needed: no
    coroutine in the common case)."""
    hold = take_key(runtime, summary, key, chat, stream=stream)
    if hold is None or hold.waits:
        hold = await admit_rest(runtime, summary, key, chat, hold, stream=stream)
    return hold


async def _admit_shared(
    runtime: Runtime, summary: Summary, key: Key, chat: ChatRequest, *, stream: bool
) -> Hold | None:
    """`admit_key` against the shared state (Redis): the limits, then the budget."""
    limits, gate = runtime.key_limits, runtime.budgets
    assert limits is not None
    budgeted = key.budget_nanos is not None and gate is not None
    tokens, amount = 0, 0
    if gate is not None and (key.tpm is not None or budgeted):
        try:
            tokens, amount = gate.ceiling(chat, key.models, budgeted=budgeted)
        except Unpriced as exc:
            raise refusal(runtime, key, exc) from None
    elif key.tpm is not None:
        tokens = token_bound(chat, runtime.settings.tenants.budget_reserve_tokens)
    try:
        hold = await limits.admit(key, chat, stream=stream, tokens=tokens)
    except Limited as exc:
        raise limited(runtime, exc) from None
    if budgeted:
        assert gate is not None
        try:
            summary.admission = await gate.reserve(key, chat, amount=amount)
        except BaseException as exc:
            if hold is not None:
                limits.settle(hold, None)  # nothing used: all given back
            if isinstance(exc, REFUSALS):
                raise refusal(runtime, key, exc) from None
            raise
    return hold


def limited(runtime: Runtime, exc: Limited) -> ApiError:
    """The 429 of a key's limit, counted."""
    runtime.metrics.key_rejections.labels(exc.reason).inc()
    return ApiError(429, _TYPES[exc.reason], exc.message, retry_after=max(exc.retry_after, 0.001))


def release_holds(runtime: Runtime, summary: Summary, hold: Hold | None) -> None:
    """A request's holds become what it used, once its usage and cost are on its summary: its
    virtual key's tpm (and stream lease), its budget's reservation. Each is given back once.
    Nothing used (a failure, a cache hit): the tpm's reservation all given back."""
    if hold is not None:
        usage = summary.usage
        used = (
            None
            if usage is None or summary.cache == "hit"
            else usage.prompt_tokens + usage.completion_tokens
        )
        meter = hold.meter
        if meter is None:
            assert runtime.key_limits is not None  # a hold came from it
            runtime.key_limits.settle(hold, used)
        else:  # the embedded state: the budget's admission too, in the same call
            cost = summary.cost
            left = meter.settle(hold, used, 0 if cost is None else cost.nanos)
            if left is not None:
                summary.budget_left = left
                summary.admission = None
    if summary.admission is not None:
        settle(runtime, summary)


def model_allow(identity: Identity | None) -> tuple[str, ...]:
    """The request's model allow-list: a virtual key's `models` (empty: all)."""
    key = None if identity is None else identity.key
    return () if key is None else key.models


def count_refusal(runtime: Runtime, error: ApiError) -> None:
    """A model outside the key's allow-list (the plan's 403) counts as the key's rejection."""
    if error.type == "model_not_allowed":
        runtime.metrics.key_rejections.labels("model_not_allowed").inc()
