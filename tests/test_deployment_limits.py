"""A deployment's own tpm and max_parallel_streams (actors/deployment_limits.py) with the
embedded state: the ceiling reserved, settled on usage, given back on failure; leases."""

from __future__ import annotations

from modelrouter.actors.deployment_limits import DeploymentHold, DeploymentLimits
from modelrouter.actors.messages import Admission, Attempt, AttemptResult
from modelrouter.actors.relay import Relay
from modelrouter.events import Usage
from modelrouter.schemas import ChatRequest, Message
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.budget import token_bound
from modelrouter.tenants.limits import DEFAULT_RESERVE_TOKENS

# 9 bytes + 8 for the message + max_tokens 8: a ceiling of 25 tokens.
CHAT = ChatRequest(messages=[Message(role="user", content="x" * 9)], max_tokens=8)


def attempt(*, stream: bool = False) -> Attempt:
    return Attempt(CHAT, "m", Relay(), stream, deadline=1e12, request_id="r")


def limits(
    state: MemoryState, name: str = "d0", *, tpm: int = 0, streams: int = 0
) -> DeploymentLimits:
    return DeploymentLimits(state, name, tpm=tpm, max_parallel_streams=streams, settling=set())


def ok(total: int) -> AttemptResult:
    return AttemptResult(True, usage=Usage(prompt_tokens=total - 1, completion_tokens=1))


async def take(limits: DeploymentLimits, *, stream: bool = False) -> DeploymentHold:
    hold = await limits.take(attempt(stream=stream))
    assert isinstance(hold, DeploymentHold), hold
    return hold


async def test_the_ceiling_is_the_key_sides_and_four_of_25_fill_a_tpm_of_100() -> None:
    assert token_bound(CHAT, DEFAULT_RESERVE_TOKENS) == 25
    deployment = limits(MemoryState(), tpm=100)
    holds = [await take(deployment) for _ in range(4)]
    assert [h.reserved for h in holds] == [25] * 4
    refused = await deployment.take(attempt())
    assert isinstance(refused, Admission)
    assert refused.rejection == "rate_limited"
    assert refused.retry_after > 0


async def test_a_failed_or_cancelled_attempt_gives_its_reservation_back() -> None:
    deployment = limits(MemoryState(), tpm=100)
    holds = [await take(deployment) for _ in range(4)]
    deployment.settle(holds[0], None)  # cancelled
    deployment.settle(holds[1], AttemptResult(False, "server_error"))
    assert isinstance(await deployment.take(attempt()), DeploymentHold)
    assert isinstance(await deployment.take(attempt()), DeploymentHold)
    assert isinstance(await deployment.take(attempt()), Admission)


async def test_usage_below_the_reservation_returns_the_rest_and_above_takes_the_extra() -> None:
    state = MemoryState()
    deployment = limits(state, tpm=100)
    hold = await take(deployment)
    deployment.settle(hold, ok(5))  # 20 of 25 back: 95 free
    assert (await state.acquire_units("tpm:d0", 100, 95)).allowed
    assert not (await state.acquire_units("tpm:d0", 100, 1)).allowed
    other = limits(state, "d1", tpm=100)
    hold = await take(other)
    other.settle(hold, ok(60))  # 35 over the reservation: taken anyway
    assert (await state.acquire_units("tpm:d1", 100, 40)).allowed
    assert not (await state.acquire_units("tpm:d1", 100, 1)).allowed


async def test_a_success_without_usage_keeps_its_reservation() -> None:
    state = MemoryState()
    deployment = limits(state, tpm=50)
    deployment.settle(await take(deployment), AttemptResult(True))
    deployment.settle(await take(deployment), AttemptResult(True))
    assert isinstance(await deployment.take(attempt()), Admission)


async def test_streams_take_a_lease_whole_answers_do_not_and_release_gives_it_back() -> None:
    deployment = limits(MemoryState(), streams=1)
    first = await take(deployment, stream=True)
    assert first.lease is not None
    assert (await take(deployment)).lease is None, "a whole answer needs no stream lease"
    refused = await deployment.take(attempt(stream=True))
    assert isinstance(refused, Admission)
    assert refused.rejection == "saturated"
    deployment.settle(first, None)
    assert (await take(deployment, stream=True)).lease is not None


async def test_a_tpm_refusal_releases_the_stream_lease_it_took() -> None:
    state = MemoryState()
    deployment = limits(state, tpm=25, streams=1)
    deployment.settle(await take(deployment), ok(25))  # the tpm is spent
    assert isinstance(await deployment.take(attempt(stream=True)), Admission)
    # The lease went back: only the tpm stands in the way, not the stream slot.
    only_streams = limits(state, streams=1)
    assert (await take(only_streams, stream=True)).lease is not None
