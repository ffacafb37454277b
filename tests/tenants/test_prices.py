"""Prices and cost: the bundled, dated table, PRICES_FILE over it, and cost in nano-dollars."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from modelrouter.config import ConfigError, Price, load_settings
from modelrouter.tenants import PriceTable, TokenUsage, bundled, cost, price_table


def test_the_bundled_table_is_dated_and_each_price_has_its_source() -> None:
    table = bundled()
    assert date.fromisoformat(table.date) <= date.today()
    assert table.prices
    for name, price in table.prices.items():
        assert price.source, name
    for provider in ("groq", "openrouter", "openai", "anthropic", "ollama"):
        assert any(name.startswith(f"{provider}/") for name in table.prices), provider


def test_the_default_model_of_each_known_provider_is_priced() -> None:
    from modelrouter.config import KNOWN_PROVIDERS

    table = bundled()
    for provider, defaults in KNOWN_PROVIDERS.items():
        assert table.price(provider, defaults.model) is not None, provider


def test_cost_is_integer_nano_dollars_rounded_up() -> None:
    price = Price(input=0.59, output=0.79)
    # 1 input token: 590 nano-dollars; 1 output token: 790.
    assert cost(TokenUsage(input=1, output=1), price) == 1380
    # 0.075 $/M is 75 nano-dollars a token; a third of one still costs one whole nano-dollar.
    assert cost(TokenUsage(input=1), Price(input=0.0000001, output=0)) == 1
    assert cost(TokenUsage(input=1_000_000, output=1_000_000), price) == 1_380_000_000
    assert cost(TokenUsage(), price) == 0


def test_each_kind_is_billed_at_its_price_and_reasoning_as_output() -> None:
    price = Price(input=1.0, cached_input=0.1, cache_write=1.25, output=5.0)
    usage = TokenUsage(input=1000, cached_input=2000, cache_write=3000, output=400, reasoning=600)
    expected = 1000 * 1000 + 2000 * 100 + 3000 * 1250 + (400 + 600) * 5000
    assert cost(usage, price) == expected


def test_cache_reads_and_writes_without_a_price_are_billed_as_input() -> None:
    price = Price(input=2.0, output=8.0)
    assert cost(TokenUsage(cached_input=10, cache_write=10), price) == 20 * 2000


def test_an_unpriced_model_costs_none() -> None:
    assert cost(TokenUsage(input=5), None) is None
    assert bundled().cost("groq", "no-such-model", TokenUsage(input=5)) is None
    assert bundled().cost("nobody", "llama", TokenUsage(input=5)) is None


def test_openai_usage_is_split_into_its_kinds() -> None:
    # prompt_tokens includes cached_tokens; completion_tokens includes reasoning_tokens.
    usage = TokenUsage.from_openai(1000, 500, cached=300, reasoning=200)
    assert usage == TokenUsage(input=700, cached_input=300, output=300, reasoning=200)
    assert TokenUsage.from_openai(10, 5, cached=99, reasoning=99) == TokenUsage(
        input=0, cached_input=10, output=0, reasoning=5
    )


def test_anthropic_usage_is_split_into_its_kinds() -> None:
    # input_tokens excludes cache reads and writes.
    usage = TokenUsage.from_anthropic(100, 50, cache_read=1000, cache_write=2000)
    assert usage == TokenUsage(input=100, cached_input=1000, cache_write=2000, output=50)


def test_a_dated_snapshot_is_priced_as_its_model_and_ollama_is_free() -> None:
    table = bundled()
    assert table.price("anthropic", "claude-haiku-4-5-20251001") == table.price(
        "anthropic", "claude-haiku-4-5"
    )
    assert table.price("openai", "gpt-4o-mini-2024-07-18") == table.price("openai", "gpt-4o-mini")
    assert table.cost("ollama", "any-local-model", TokenUsage(input=10**6, output=10**6)) == 0


def test_prices_file_extends_and_overrides_the_bundled_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "groq/llama-3.3-70b-versatile": {"input": 0.5, "output": 0.6},
                "openrouter/acme/model-x": {"input": 0.59, "output": 0.79, "cached_input": 0.295},
            }
        )
    )
    settings = load_settings({"PRICES_FILE": str(path)})
    table = price_table(settings.tenants.prices)
    assert table.price("groq", "llama-3.3-70b-versatile") == Price(input=0.5, output=0.6)
    assert table.cost("openrouter", "acme/model-x", TokenUsage(cached_input=1)) == 295
    assert table.price("openai", "gpt-4o-mini") == bundled().price("openai", "gpt-4o-mini")
    assert isinstance(table, PriceTable)
    assert table.date == bundled().date


def test_a_models_output_limit_is_in_the_table_and_prices_file_may_set_it(
    tmp_path: Path,
) -> None:
    assert bundled().max_output("openai", "gpt-4o-mini") == 16_384
    assert bundled().max_output("openai", "gpt-4o-mini-2024-07-18") == 16_384  # a snapshot
    assert bundled().max_output("ollama", "llama3") is None  # priced, no published limit
    assert bundled().max_output("acme", "x") is None  # not in the table
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"ollama/llama3": {"input": 0, "output": 0, "max_output": 2048}}))
    table = price_table(load_settings({"PRICES_FILE": str(path)}).tenants.prices)
    assert table.max_output("ollama", "llama3") == 2048
    assert table.max_output("ollama", "other") is None  # the bundled `ollama/*` still


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"groq/x": {"input": -1, "output": 1}}', "Expected `float` >= 0.0"),
        ('{"groq/x": {"input": 1, "output": 1, "max_output": 0}}', "Expected `int` >= 1"),
        ('{"groq/x": {"input": 1e400, "output": 1}}', "out of range"),
        ('{"groq/x": {"input": 1, "output": 1, "extra": 1}}', "unknown field `extra`"),
        ('{"groq/x": {"output": 1}}', "missing required field `input`"),
        ('{"no-provider": {"input": 1, "output": 1}}', "is not provider/model"),
        ('{"groq/x": {"input": 1, "output": 1}', "truncated"),
        ('{"groq/x": oops}', "malformed"),
        ('[{"input": 1}]', "Expected `object`"),
    ],
)
def test_a_bad_prices_file_stops_start_up_saying_why(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings({"PRICES_FILE": str(path), "PORT": "0"})
    assert any(problem in p and "PRICES_FILE" in p for p in caught.value.problems), caught.value
    assert any("PORT" in p for p in caught.value.problems)  # listed with every other problem


def test_a_missing_prices_file_is_a_start_up_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"PRICES_FILE": str(tmp_path / "absent.json")})
