"""A key's own limits on the embedded state, with a clock that moves only when told: rpm is
the GCRA bucket; tpm reserves a request's ceiling and settles on its usage (unused tokens come
back, a reservation given up comes back whole); streams are leases, released on settle."""

from __future__ import annotations

from typing import Any

import pytest

from modelrouter.schemas import ChatRequest, Message
from modelrouter.state import MemoryState
from modelrouter.tenants import Key
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.limits import DEFAULT_RESERVE_TOKENS, KeyLimits, Limited
from tests.tenants.support import make_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(**limits: Any) -> Key:
    return make_key(**limits)


def chat(text: str = "hello", max_tokens: int | None = 10) -> ChatRequest:
    return ChatRequest(messages=[Message("user", text)], max_tokens=max_tokens)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limits(clock: Clock) -> KeyLimits:
    return KeyLimits(MemoryState(clock=clock))


def test_the_ceiling_is_the_prompts_bytes_plus_eight_a_message_plus_max_tokens() -> None:
    # é is two bytes in UTF-8
    assert token_bound(chat("héllo", 10), DEFAULT_RESERVE_TOKENS) == 6 + 8 + 10
    request = ChatRequest(messages=[Message("system", "a"), Message("user", "bc")])
    assert token_bound(request, 100) == (1 + 8) + (2 + 8) + 100


async def test_a_key_without_limits_holds_nothing(limits: KeyLimits) -> None:
    assert await limits.admit(key(), chat(), stream=True) is None


async def test_rpm_admits_exactly_its_budget_then_says_when(
    limits: KeyLimits, clock: Clock
) -> None:
    limited = key(rpm=3)
    for _ in range(3):
        await limits.admit(limited, chat(), stream=False)
    with pytest.raises(Limited) as over:
        await limits.admit(limited, chat(), stream=False)
    assert over.value.reason == "rate_limited"
    assert over.value.retry_after == pytest.approx(20.0)  # one request every 60/3 s
    clock.now += 20.0
    await limits.admit(limited, chat(), stream=False)


async def test_tpm_reserves_the_ceiling_and_settles_on_the_usage(limits: KeyLimits) -> None:
    limited = key(tpm=100)
    request = chat("x" * 22, max_tokens=10)  # ceiling 22 + 8 + 10 = 40
    first = await limits.admit(limited, request, stream=False)
    second = await limits.admit(limited, request, stream=False)
    assert first is not None
    assert second is not None
    with pytest.raises(Limited) as over:  # 80 reserved: 40 more do not fit in 100
        await limits.admit(limited, request, stream=False)
    assert over.value.reason == "tpm"
    assert limits.settle(first, 5) is None  # it used 5 of its 40: 35 come back, at once
    third = await limits.admit(limited, request, stream=False)
    assert third is not None
    assert limits.settle(second, None) is None  # failed: its 40 come back whole
    await limits.admit(limited, request, stream=False)
    with pytest.raises(Limited):  # 5 + 40 + 40 = 85 used: 40 more do not fit
        await limits.admit(limited, request, stream=False)


async def test_usage_over_the_reservation_is_taken_even_over_the_limit(
    limits: KeyLimits, clock: Clock
) -> None:
    limited = key(tpm=60)
    hold = await limits.admit(limited, chat("", max_tokens=2), stream=False)  # 10 reserved
    assert hold is not None
    assert limits.settle(hold, 60) is None  # it used the whole minute's budget
    with pytest.raises(Limited) as over:
        await limits.admit(limited, chat("", max_tokens=2), stream=False)
    assert over.value.retry_after == pytest.approx(10.0)  # 10 tokens back at 1 a second
    clock.now += 10.0
    await limits.admit(limited, chat("", max_tokens=2), stream=False)


async def test_a_ceiling_above_the_tpm_takes_a_full_bucket(limits: KeyLimits) -> None:
    limited = key(tpm=50)
    hold = await limits.admit(limited, chat("x" * 500), stream=False)
    assert hold is not None
    assert hold.reserved == 50


async def test_a_tpm_refusal_gives_the_rpm_request_back(limits: KeyLimits) -> None:
    limited = key(rpm=2, tpm=30)
    await limits.admit(limited, chat("", max_tokens=22), stream=False)  # 30: all of the tpm
    for _ in range(3):
        with pytest.raises(Limited) as over:
            await limits.admit(limited, chat("", max_tokens=22), stream=False)
        assert over.value.reason == "tpm"
    relaxed = key(rpm=2)  # the same rpm bucket: one request of 2 was used, not 4
    await limits.admit(relaxed, chat(), stream=False)
    with pytest.raises(Limited) as over:
        await limits.admit(relaxed, chat(), stream=False)
    assert over.value.reason == "rate_limited"


async def test_streams_are_leases_released_on_settle(limits: KeyLimits) -> None:
    limited = key(max_parallel_streams=2)
    assert await limits.admit(limited, chat(), stream=False) is None  # not a stream: no lease
    held = [await limits.admit(limited, chat(), stream=True) for _ in range(2)]
    with pytest.raises(Limited) as over:
        await limits.admit(limited, chat(), stream=True)
    assert over.value.reason == "streams"
    first = held[0]
    assert first is not None
    assert limits.settle(first, 3) is None  # done at once: the embedded state
    await limits.admit(limited, chat(), stream=True)


async def test_a_refused_request_holds_no_stream(limits: KeyLimits) -> None:
    limited = key(max_parallel_streams=1, rpm=1)
    hold = await limits.admit(limited, chat(), stream=True)
    assert hold is not None
    assert limits.settle(hold, 1) is None  # done at once: the embedded state
    with pytest.raises(Limited) as over:  # the rpm is used up...
        await limits.admit(limited, chat(), stream=True)
    assert over.value.reason == "rate_limited"
    streams_only = key(max_parallel_streams=1)  # ...and its lease was given back
    assert await limits.admit(streams_only, chat(), stream=True) is not None
