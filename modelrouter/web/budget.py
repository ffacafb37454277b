"""Budgets on the request path: a budgeted virtual key's request reserves its worst case
before it is routed (`web.keylimits.admit_key`, after the key's own limits) and settles its
real cost where it ends (`settle`), in a `finally` (the settle never suspends, so a
cancellation cannot skip it).

Over budget: 429 `insufficient_quota` (OpenAI's code and type) with `x-should-retry: false`
and the period's reset time in the message. Answers to budgeted keys carry
`x-modelrouter-budget-remaining-usd`: what is left after the settle (a stream: after its
reservation, as its headers go before its cost is known).
"""

from __future__ import annotations

from modelrouter.errors import ApiError
from modelrouter.tenants.cost import usd_text
from modelrouter.tenants.gate import OverBudget, SpendUnknown, Unpriced
from modelrouter.tenants.keys import Key
from modelrouter.web.runtime import Runtime, Summary

REMAINING_HEADER = "x-modelrouter-budget-remaining-usd"


REFUSALS = (OverBudget, Unpriced, SpendUnknown)  # what `BudgetGate` refuses a request with


def refusal(runtime: Runtime, key: Key, exc: Exception) -> ApiError:
    """The answer to a request its key's budget refused (`REFUSALS`), counted."""
    if isinstance(exc, OverBudget):
        runtime.metrics.key_rejections.labels("budget").inc()
        reset = exc.window.reset_at
        when = (
            "it does not reset (a total budget)"
            if reset is None
            else f"it resets at {reset:%Y-%m-%dT%H:%M:%SZ}"
        )
        budget = f"this key's budget of {usd_text(key.budget_nanos or 0)} USD"
        budget += f" per {key.budget_period}"
        if exc.remaining > 0:  # not spent: this request's worst case is more than is left
            fits = exc.fits
            advice = (
                "send a lower max_tokens"
                if fits is None
                else f"send max_tokens of at most {fits}"
                if fits > 0
                else "its prompt alone may cost more"
            )
            message = (
                f"this request may cost up to {usd_text(exc.amount)} USD (its prompt and"
                " max_tokens at the highest price of the models it may use; without max_tokens,"
                " the model's output limit or BUDGET_RESERVE_TOKENS is reserved), more than the"
                f" {usd_text(exc.remaining)} USD {budget} has left (neither spent nor held by"
                f" requests in flight): {advice}; {when}"
            )
        else:
            message = f"{budget} is spent (or held by requests in flight); {when}"
        return ApiError(429, "insufficient_quota", message, retryable=False)
    if isinstance(exc, Unpriced):
        runtime.metrics.key_rejections.labels("unpriced").inc()
        return ApiError(
            403,
            "model_unpriced",
            f"model {exc.model!r} has no price, and this key has a budget: give it a price in"
            " PRICES_FILE (or set BUDGET_ALLOW_UNPRICED=true)",
            param="model",
        )
    runtime.metrics.key_rejections.labels("budget_unavailable").inc()
    return ApiError(
        503,
        "budget_unavailable",
        "this key's spend cannot be verified now (BUDGET_FAIL_CLOSED): retry",
        retry_after=1.0,
    )


def settle(runtime: Runtime, summary: Summary) -> None:
    """Replace the request's hold by its cost (0 when it cost nothing or never answered)."""
    admission = summary.admission
    if admission is None or runtime.budgets is None:
        return
    summary.admission = None
    cost = summary.cost
    nanos = 0 if cost is None else cost.nanos
    runtime.budgets.settle(admission, nanos)
    summary.budget_left = admission.remaining + admission.hold.amount - nanos


def remaining_header(summary: Summary) -> str | None:
    """The header's value: after the settle, else after the reservation (a stream)."""
    left = summary.budget_left
    if left is None and summary.admission is not None:
        left = summary.admission.remaining
    return None if left is None else usd_text(max(left, 0))
