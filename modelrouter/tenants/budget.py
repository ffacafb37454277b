"""A budget's period and a request's worst-case cost: what a budgeted key reserves.

Periods are in UTC: a day from 00:00, a week from Monday 00:00, a month from its first day;
`total` never resets. A period is named by its start (`d20261206`, `w20261130`, `m202612`,
`total`): the shared counters of one period live under that name, so a new period starts from
zero without anyone resetting anything.

The reservation bounds the request's cost from above whatever the provider answers: the prompt
is at most one token per UTF-8 byte of its messages (no tokenizer makes more tokens than bytes)
plus `TOKENS_PER_MESSAGE` for each message's role and separators, the answer at most
`max_tokens` (else BUDGET_RESERVE_TOKENS), and every token is priced at the highest rate of the
most expensive candidate the request may fall over to.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from modelrouter.schemas import ChatRequest, EmbedChat
from modelrouter.tenants.keys import Period
from modelrouter.tenants.prices import Rates

TOKENS_PER_MESSAGE: Final = 8
PER_MILLION: Final = 1_000_000  # rates are per million tokens


class Window(msgspec.Struct, frozen=True, gc=False):
    """One period of a budget: its name, its start, and when the next begins (None: never)."""

    name: str
    start: datetime | None
    reset_at: datetime | None


TOTAL: Final = Window("total", None, None)


def window(period: Period, now: datetime) -> Window:
    """The period of kind `period` that `now` (aware) is in."""
    if period == "total":
        return TOTAL
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return Window(f"d{day:%Y%m%d}", day, day + timedelta(days=1))
    if period == "week":
        start = day - timedelta(days=day.weekday())  # Monday is 0
        return Window(f"w{start:%Y%m%d}", start, start + timedelta(days=7))
    start = day.replace(day=1)
    after = start.replace(year=start.year + 1, month=1) if start.month == 12 else None
    after = after or start.replace(month=start.month + 1)
    return Window(f"m{start:%Y%m}", start, after)


def token_bound(chat: ChatRequest, default_output: int | None = None) -> int:
    """Tokens the request can use at most: its prompt (UTF-8 bytes of every message's text,
    plus a few per message; tool calls and tools as JSON) and, unless `default_output` is
    None, its output (`output_bound`). One call on the request path for both."""
    total = 0
    for message in chat.messages:
        content = message.content
        # An ASCII text's length is its byte count (and `isascii` costs nothing on a str).
        total += (len(content) if content.isascii() else len(content.encode())) + TOKENS_PER_MESSAGE
        calls = message.tool_calls
        if calls:
            total += len(msgspec.json.encode(calls))
    if chat.tools:
        total += len(msgspec.json.encode(chat.tools))
    if default_output is None:
        return total
    if chat.operation == "chat":  # `output_bound`'s common case
        given = chat.max_tokens
        return total + (given if given is not None and given > 0 else default_output)
    return total + output_bound(chat, default_output)


def output_bound(chat: ChatRequest, default: int) -> int:
    """Output tokens at most: none for an operation that writes no text (embeddings, a token
    count; what `token_bound`'s prompt leaves out, an embedding's token arrays, is counted
    here), else `max_tokens`, or `default`."""
    if chat.operation != "chat":  # a token array's tokens are input, known exactly
        return chat.given_tokens() if isinstance(chat, EmbedChat) else 0
    given = chat.max_tokens
    return given if given is not None and given > 0 else default


def output_that_fits(chat: ChatRequest, rate: int, left: int) -> int | None:
    """The largest max_tokens whose worst case at `rate` fits in `left` nano-dollars (0: not
    even the prompt does); None where output is not what a request reserves (not a chat, or
    no rate)."""
    if rate <= 0 or chat.operation != "chat":
        return None
    return max(left * PER_MILLION // rate - token_bound(chat), 0)


def top_rate(rates: Iterable[Rates]) -> int:
    """The highest per-token rate (nano-dollars per million tokens) of any kind, any candidate."""
    return max(
        (max(r.input, r.cached_input, r.cache_write, r.output) for r in rates),
        default=0,
    )


def nanos_for(tokens: int, rate: int) -> int:
    """`tokens` at `rate` (nano-dollars per million tokens), in nano-dollars rounded up."""
    return -(-tokens * rate // PER_MILLION)
