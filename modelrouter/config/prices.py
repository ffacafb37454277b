"""A model's price (USD per million tokens) and `PRICES_FILE`, read and checked at start-up.

The price table itself (the bundled, dated one, and cost) lives in `modelrouter.tenants`;
the file is configuration, so a bad one is reported with every other problem at start-up.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Final

import msgspec

if TYPE_CHECKING:  # structs imports this module, and reader imports structs
    from modelrouter.config.reader import Reader

MAX_PRICE: Final = 100_000.0  # USD per million tokens: far above any real price, catches typos
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
PerMillion = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_PRICE)]
OutputTokens = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
# "provider/model": the provider as configured, the model as the provider names it.
PRICE_KEY: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}/[^\s\x00-\x1f\x7f]{1,256}")


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per million tokens of each kind. Reasoning tokens are billed as output. A missing
    `cached_input` or `cache_write` is billed at the `input` price."""

    input: PerMillion
    output: PerMillion
    cached_input: PerMillion | None = None  # a cache read (OpenAI's cached, Anthropic's hit)
    cache_write: PerMillion | None = None  # writing the prompt cache (Anthropic)
    source: str | None = None  # where the price was read, for the people who check it
    # The most tokens the model writes in one answer, as published: what a request without
    # max_tokens reserves of it (budgets, a key's tpm) instead of BUDGET_RESERVE_TOKENS.
    max_output: OutputTokens | None = None


def parse_prices(data: bytes) -> tuple[dict[str, Price], list[str]]:
    """The prices in a JSON object `{"provider/model": {...}}`, and what is wrong with it."""
    try:
        prices = msgspec.json.decode(data, type=dict[str, Price])
    except msgspec.DecodeError as exc:  # ValidationError included: it names the field
        return {}, [str(exc)]
    wrong = [name for name in prices if not PRICE_KEY.fullmatch(name)]
    problems = [f"{name!r} is not provider/model" for name in wrong]
    return prices, problems


def read_prices(reader: Reader, name: str) -> tuple[str | None, dict[str, Price]]:
    """The path in `name` (PRICES_FILE) and the prices it holds; problems go to `reader`."""
    path = reader.raw(name)
    if path is None:
        return None, {}
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reader.problems.append(f"{name}={path!r} cannot be read ({exc.strerror or exc})")
        return path, {}
    if len(data) > MAX_FILE_BYTES:
        reader.problems.append(f"{name}={path!r} is larger than {MAX_FILE_BYTES} bytes")
        return path, {}
    prices, problems = parse_prices(data)
    reader.problems += [f"{name}={path!r}: {problem}" for problem in problems]
    return path, prices
