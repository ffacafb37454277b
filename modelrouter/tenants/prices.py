"""Prices and cost: the bundled, dated price table (`prices.json`, beside this module, each
price with its source), PRICES_FILE over it, and a request's cost in integer nano-dollars.

Cost is exact integer arithmetic: prices become nano-dollars per million tokens once, when the
table is built, and a request's cost is rounded up to the next nano-dollar, so the spend
counters, the history rows and the headers all carry the same integer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from typing import Final

import msgspec

from modelrouter.config import Price

NANOS_PER_USD: Final = 1_000_000_000
_PER: Final = 1_000_000  # prices are per million tokens
# A dated snapshot of a model, priced as the model: `claude-haiku-4-5-20251001`,
# `gpt-4o-mini-2024-07-18`.
_SNAPSHOT: Final = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """A request's tokens by how each is billed; every count excludes the others."""

    input: int = 0  # prompt tokens at the input price: cache reads and writes not included
    cached_input: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write: int = 0  # prompt tokens written to the provider's prompt cache
    output: int = 0  # completion tokens, reasoning not included
    reasoning: int = 0  # billed at the output price

    @classmethod
    def from_openai(
        cls, prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0
    ) -> TokenUsage:
        """OpenAI's usage: `prompt_tokens` includes `cached_tokens` and `completion_tokens`
        includes `reasoning_tokens`."""
        cached = min(max(cached, 0), max(prompt, 0))
        reasoning = min(max(reasoning, 0), max(completion, 0))
        return cls(
            input=max(prompt, 0) - cached,
            cached_input=cached,
            output=max(completion, 0) - reasoning,
            reasoning=reasoning,
        )

    @classmethod
    def from_anthropic(
        cls, input_tokens: int, output_tokens: int, *, cache_read: int = 0, cache_write: int = 0
    ) -> TokenUsage:
        """Anthropic's usage: `input_tokens` excludes cache reads and writes (and thinking is
        part of `output_tokens`, billed as output)."""
        return cls(
            input=max(input_tokens, 0),
            cached_input=max(cache_read, 0),
            cache_write=max(cache_write, 0),
            output=max(output_tokens, 0),
        )


class Rates(msgspec.Struct, frozen=True):
    """A price as integer nano-dollars per million tokens of each kind."""

    input: int
    cached_input: int
    cache_write: int
    output: int


def _nanos(per_million: float) -> int:
    # From the number's decimal text: 0.295 is exactly 295,000,000 nano-dollars.
    return int((Decimal(repr(per_million)) * NANOS_PER_USD).to_integral_value())


def rates(price: Price) -> Rates:
    input_ = _nanos(price.input)
    cached = input_ if price.cached_input is None else _nanos(price.cached_input)
    write = input_ if price.cache_write is None else _nanos(price.cache_write)
    return Rates(input_, cached, write, _nanos(price.output))


def cost(usage: TokenUsage, price: Price | Rates | None) -> int | None:
    """What `usage` costs at `price`, in nano-dollars rounded up; None when unpriced."""
    if price is None:
        return None
    r = price if isinstance(price, Rates) else rates(price)
    total = (
        usage.input * r.input
        + usage.cached_input * r.cached_input
        + usage.cache_write * r.cache_write
        + (usage.output + usage.reasoning) * r.output
    )
    return -(-total // _PER)


def nanos_to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


class PriceTable:
    """Prices by `provider/model`: exact, then the model without a snapshot date, then
    `provider/*`."""

    def __init__(self, prices: Mapping[str, Price], *, date: str) -> None:
        self.prices = dict(prices)
        self.date = date
        self._rates = {name: rates(price) for name, price in self.prices.items()}

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        """This table with `overrides` (PRICES_FILE) added, or replacing whole entries."""
        return PriceTable({**self.prices, **overrides}, date=self.date)

    def _name(self, provider: str, model: str) -> str | None:
        found = self.prices
        for name in (f"{provider}/{model}", f"{provider}/{_SNAPSHOT.sub('', model)}"):
            if name in found:
                return name
        wildcard = f"{provider}/*"
        return wildcard if wildcard in found else None

    def price(self, provider: str, model: str) -> Price | None:
        name = self._name(provider, model)
        return None if name is None else self.prices[name]

    def rates(self, provider: str, model: str) -> Rates | None:
        name = self._name(provider, model)
        return None if name is None else self._rates[name]

    def max_output(self, provider: str, model: str) -> int | None:
        """The model's published output limit in tokens (None: not in the table)."""
        name = self._name(provider, model)
        return None if name is None else self.prices[name].max_output

    def cost(self, provider: str, model: str, usage: TokenUsage) -> int | None:
        return cost(usage, self.rates(provider, model))


class _Bundled(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    date: str
    currency: str
    unit: str
    notes: str
    prices: dict[str, Price]


@functools.cache
def bundled() -> PriceTable:
    """The price table shipped with this version (its `date` says when it was checked)."""
    data = resources.files("modelrouter.tenants").joinpath("prices.json").read_bytes()
    table = msgspec.json.decode(data, type=_Bundled)
    return PriceTable(table.prices, date=table.date)


def price_table(overrides: Mapping[str, Price]) -> PriceTable:
    """The bundled table with PRICES_FILE's prices (`Settings.tenants.prices`) over it."""
    return bundled().with_overrides(overrides) if overrides else bundled()
