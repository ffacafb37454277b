"""A request's charge: the usage event's kinds at their prices, unpriced models, estimates."""

from __future__ import annotations

from modelrouter.config import Price
from modelrouter.events import Usage
from modelrouter.schemas import ChatRequest, Message
from modelrouter.tenants import PriceTable, TokenUsage
from modelrouter.tenants.cost import (
    ESTIMATE_TOKENS_PER_MESSAGE,
    Charge,
    Pricing,
    estimated_tokens,
    estimated_usage,
    token_usage,
    usd_text,
)

# $2 in, $0.5 cached read, $2.5 cache write, $8 out per million: integers of nano-dollars a token.
PRICE = Price(input=2.0, cached_input=0.5, cache_write=2.5, output=8.0)
PRICING = Pricing(PriceTable({"openai/gpt-4.1": PRICE, "anthropic/claude": PRICE}, date="x"))


def test_openai_usage_bills_cached_tokens_at_the_cached_price_and_reasoning_as_output() -> None:
    # OpenAI: 1000 prompt tokens of which 600 cached; 300 completion tokens of which 200 reasoning.
    usage = Usage(1000, 300, cached_input=600, reasoning=200)
    assert token_usage(usage) == TokenUsage.from_openai(1000, 300, cached=600, reasoning=200)
    charge = PRICING.charge("openai", "gpt-4.1", usage)
    assert charge == Charge(400 * 2000 + 600 * 500 + 300 * 8000)


def test_anthropic_usage_bills_cache_reads_and_writes_apart_from_the_input() -> None:
    # Anthropic: input_tokens 100 (without the cache's), 800 read and 50 written.
    usage = Usage(950, 20, cached_input=800, cache_write=50)
    expected = TokenUsage.from_anthropic(100, 20, cache_read=800, cache_write=50)
    assert token_usage(usage) == expected
    charge = PRICING.charge("anthropic", "claude", usage)
    assert charge.nanos == 100 * 2000 + 800 * 500 + 50 * 2500 + 20 * 8000


def test_kinds_larger_than_their_totals_never_bill_more_than_the_totals() -> None:
    usage = Usage(10, 5, cached_input=50, cache_write=50, reasoning=9)
    tokens = token_usage(usage)
    assert tokens.input + tokens.cached_input + tokens.cache_write == 10
    assert tokens.output + tokens.reasoning == 5


def test_negative_counts_from_an_upstream_never_make_a_negative_cost() -> None:
    for usage in (Usage(-5, -3), Usage(-5, 2, cached_input=1), Usage(3, 2, reasoning=-4)):
        assert PRICING.charge("openai", "gpt-4.1", usage).nanos >= 0
    assert PRICING.charge("openai", "gpt-4.1", Usage(-5, 2, cached_input=1)).nanos == 2 * 8000


def test_an_unpriced_model_costs_nothing_and_says_so() -> None:
    assert PRICING.charge("openai", "gpt-unknown", Usage(10, 10)) == Charge(0, priced=False)
    assert PRICING.charge("openai", "gpt-unknown", Usage(10, 10)) == Charge(0, priced=False)


def test_the_pricing_memo_is_bounded_and_still_prices_past_its_bound() -> None:
    pricing = Pricing(PRICING.table, memo=2)
    for n in range(5):
        assert not pricing.charge("openai", f"m{n}", Usage(1, 1)).priced
    assert pricing.charge("openai", "gpt-4.1", Usage(1, 0)).nanos == 2000
    assert len(pricing._memo) == 2


def test_an_estimate_counts_the_messages_and_the_text_relayed() -> None:
    chat = ChatRequest(messages=[Message("system", "be brief"), Message("user", "hello there")])
    usage = estimated_usage(chat, 14, None)
    prompt = estimated_tokens(len("be brief") + len("hello there"))
    assert usage == Usage(prompt + 2 * ESTIMATE_TOKENS_PER_MESSAGE, 4, estimated=True)


def test_an_estimate_keeps_the_prompt_tokens_the_provider_gave() -> None:
    chat = ChatRequest(messages=[Message("user", "hello there")])
    given = Usage(900, 1, cached_input=800)  # Anthropic's message_start
    usage = estimated_usage(chat, 40, given)
    assert usage == Usage(900, 10, cached_input=800, estimated=True)


def test_dollars_are_written_as_exact_decimals() -> None:
    nanos = (0, 1, 7500, 999_999_999, 1_000_000_000, 12_345_678_901, 10**18 + 5, -7500)
    assert [usd_text(n) for n in nanos] == [
        "0",
        "0.000000001",
        "0.0000075",
        "0.999999999",
        "1",
        "12.345678901",
        "1000000000.000000005",
        "-0.0000075",
    ]
