"""A request's cost: its final usage at the answering provider's and model's price.

Computed once per request where it ends (`web.answers`), in integer nano-dollars rounded up,
so the header, the final usage chunk, the history row and the spend counter carry the same
integer. A cache hit costs 0; a model without a price costs 0 and says it is unpriced. A stream
whose provider said nothing of its usage (cut, abandoned, or a server that ignores
`stream_options`) is billed from an estimate: `ESTIMATE_CHARS_PER_TOKEN` characters a token of
the messages and of the text relayed.
"""

from __future__ import annotations

from typing import Final

import msgspec

from modelrouter.events import Usage
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.prices import NANOS_PER_USD, PriceTable, Rates, TokenUsage, cost

# OpenAI's rule of thumb ("one token is about four characters of English text"); an estimate
# is marked as one wherever it is shown.
ESTIMATE_CHARS_PER_TOKEN: Final = 4
ESTIMATE_TOKENS_PER_MESSAGE: Final = 4  # a message's role and separators
_UNPRICED: Final = Rates(0, 0, 0, 0)  # a memo's stand-in for "no price" (never charged)


class Charge(msgspec.Struct, frozen=True, gc=False):
    """What a request costs (`nanos`), and whether that figure is a price applied (`priced`:
    false for an unpriced model, which costs 0) to a usage the provider gave (`estimated`:
    false) or one counted here."""

    nanos: int
    priced: bool = True
    estimated: bool = False


FREE: Final = Charge(0)  # a cache hit: no provider was called


def token_usage(usage: Usage) -> TokenUsage:
    """The usage event's tokens by how each is billed: none negative, and no kind counted
    beyond its total (whatever an upstream sent)."""
    prompt, completion = max(usage.prompt_tokens, 0), max(usage.completion_tokens, 0)
    cached = min(max(usage.cached_input, 0), prompt)
    write = min(max(usage.cache_write, 0), prompt - cached)
    reasoning = min(max(usage.reasoning, 0), completion)
    return TokenUsage(
        input=prompt - cached - write,
        cached_input=cached,
        cache_write=write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


class Pricing:
    """The price table as the request path reads it: the rates of each (provider, model) found
    once, then by a dict lookup (at most `memo` pairs kept: clients choose the models)."""

    __slots__ = ("_memo", "memo", "table")

    def __init__(self, table: PriceTable, *, memo: int = 1024) -> None:
        self.table = table
        self.memo = memo
        self._memo: dict[tuple[str, str], Rates] = {}

    def rates(self, provider: str, model: str) -> Rates | None:
        key = (provider, model)
        found = self._memo.get(key)
        if found is None:
            found = self.table.rates(provider, model) or _UNPRICED
            if len(self._memo) < self.memo:
                self._memo[key] = found
        return None if found is _UNPRICED else found

    def max_output(self, provider: str, model: str) -> int | None:
        """The model's published output limit (`PriceTable.max_output`)."""
        return self.table.max_output(provider, model)

    def charge(self, provider: str, model: str, usage: Usage) -> Charge:
        rates = self.rates(provider, model)
        if rates is None:
            return Charge(0, priced=False, estimated=usage.estimated)
        nanos = cost(token_usage(usage), rates) or 0
        return Charge(nanos, estimated=usage.estimated)


def estimated_tokens(chars: int) -> int:
    """Tokens in `chars` characters of text, rounded up."""
    return -(-max(chars, 0) // ESTIMATE_CHARS_PER_TOKEN)


def estimated_usage(chat: ChatRequest | None, relayed_chars: int, given: Usage | None) -> Usage:
    """A stream's usage when the provider did not give it whole: what it gave (Anthropic's
    prompt tokens come first), the rest counted from the messages and the text relayed; the
    larger figure of each total is kept (a partial count is a lower bound)."""
    prompt = 0
    if chat is not None:
        chars = sum(len(message.content) for message in chat.messages)
        prompt = estimated_tokens(chars) + ESTIMATE_TOKENS_PER_MESSAGE * len(chat.messages)
    counted = Usage(0, estimated_tokens(relayed_chars), estimated=True)
    if given is None or given.prompt_tokens == 0:
        counted = msgspec.structs.replace(counted, prompt_tokens=prompt)
    return counted if given is None else given.merge(counted)


def usd_text(nanos: int) -> str:
    """Nano-dollars as an exact decimal number of dollars (`0.000123`, `0`)."""
    if nanos < 0:
        return f"-{usd_text(-nanos)}"
    # From the integer's digits: cheaper than a division and a format spec, and this is on
    # the headers of every answer.
    text = str(nanos)
    if len(text) > 9:
        whole, part = text[:-9], text[-9:].rstrip("0")
    else:
        whole, part = "0", text.rjust(9, "0").rstrip("0")
    return f"{whole}.{part}" if part else whole


def usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD
