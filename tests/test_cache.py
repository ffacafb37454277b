"""The response cache in one gateway (in memory): hits without upstream calls, coalescing of
identical requests in flight, replays identical to the original, and what is never cached."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import (
    GROQ_KEY,
    USER,
    Gateway,
    Mock,
    cut_stream_error,
    parse_sse,
    wait_until,
)
from tests.scrape import scrape

PACED = "token_delay=0.05,tokens=8"
ZERO = {**USER, "temperature": 0}


def groq_only(mock: Mock, spec: str = "", **extra: str) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": mock.base(spec),
        "GROQ_RATE_LIMIT": "0",
        "CACHE_MODE": "deterministic",
        **extra,
    }


async def cache_counts(client: TestClient[Any, Any]) -> dict[str, float]:
    page = await scrape(client)
    counts = {
        r: page.total("modelrouter_cache_requests_total", result=r)
        for r in ("hit", "miss", "bypass")
    }
    counts["coalesced"] = page.total("modelrouter_cache_coalesced_total")
    return counts


def openai_stream_normalised(text: str) -> list[Any]:
    """An OpenAI stream's events with what differs per request (id, created) taken out."""
    out: list[Any] = []
    for kind, data in parse_sse(text):
        if data == "[DONE]":
            out.append((kind, data))
            continue
        chunk = json.loads(data)
        chunk.pop("id", None)
        chunk.pop("created", None)
        out.append((kind, chunk))
    return out


# -- hits ----------------------------------------------------------------------------------------
async def test_a_repeated_request_is_a_hit_with_no_upstream_call(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    first = await client.post("/chat", json=ZERO)
    second = await client.post("/chat", json=ZERO)
    assert (first.status, second.status) == (200, 200)
    assert first.headers["x-modelrouter-cache"] == "miss"
    assert second.headers["x-modelrouter-cache"] == "hit"
    one, two = await first.json(), await second.json()
    assert one.pop("request_id") != two.pop("request_id")
    # A hit costs nothing: no provider was called.
    assert (one["provider_meta"].pop("cost_usd"), two["provider_meta"].pop("cost_usd")) == (
        7.5e-06,
        0,
    )
    assert (first.headers["x-modelrouter-cost-usd"], second.headers["x-modelrouter-cost-usd"]) == (
        "0.0000075",
        "0",
    )
    assert one == two  # same text, provider, model, tokens and attempts
    assert await mock.count() == 1
    counts = await cache_counts(client)
    assert (counts["hit"], counts["miss"]) == (1, 1)


async def test_the_openai_api_hits_too_and_a_hit_counts_no_provider_tokens(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    body = {"model": "auto", "seed": 7, **USER}
    first = await (await client.post("/v1/chat/completions", json=body)).json()
    response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["x-modelrouter-cache"] == "hit"
    second = await response.json()
    assert second["choices"] == first["choices"]
    assert (first["usage"].pop("cost_usd"), second["usage"].pop("cost_usd")) == (7.5e-06, 0)
    assert second["usage"] == first["usage"]
    assert await mock.count() == 1
    page = await scrape(client)
    assert page.value("modelrouter_tokens_total", provider="groq", kind="completion") == 8


async def test_a_different_parameter_or_model_chain_is_another_answer(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    await client.post("/chat", json=ZERO)
    other = await client.post("/chat", json={**ZERO, "max_tokens": 5})
    assert other.headers["x-modelrouter-cache"] == "miss"
    other = await client.post("/chat", json={**ZERO, "model": "groq/another-model"})
    assert other.headers["x-modelrouter-cache"] == "miss"
    assert await mock.count() == 3


async def test_the_client_key_and_the_request_id_are_not_part_of_the_key(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock, API_KEY="key-one-000001,key-two-000002"))
    one = {"Authorization": "Bearer key-one-000001", "X-Request-ID": "first"}
    two = {"Authorization": "Bearer key-two-000002", "X-Request-ID": "second"}
    await client.post("/chat", json={**ZERO, "user": "ann"}, headers=one)
    response = await client.post("/chat", json={**ZERO, "user": "bob"}, headers=two)
    assert response.headers["x-modelrouter-cache"] == "hit"
    assert await mock.count() == 1


async def test_with_cache_key_user_each_user_has_its_own_answers(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock, CACHE_KEY_USER="true"))
    await client.post("/chat", json={**ZERO, "user": "ann"})
    response = await client.post("/chat", json={**ZERO, "user": "bob"})
    assert response.headers["x-modelrouter-cache"] == "miss"


# -- what is and is not cached ------------------------------------------------------------------
async def test_deterministic_mode_leaves_sampled_requests_alone_and_all_mode_takes_them(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    sampled = {**USER, "temperature": 0.7}
    for _ in range(2):
        response = await client.post("/chat", json=sampled)
        assert response.headers["x-modelrouter-cache"] == "bypass"
    assert await mock.count() == 2
    client = await gateway(**groq_only(mock, CACHE_MODE="all"))
    await client.post("/chat", json=sampled)
    response = await client.post("/chat", json=sampled)
    assert response.headers["x-modelrouter-cache"] == "hit"
    assert await mock.count() == 3


async def test_with_the_cache_off_there_is_no_header_and_every_request_goes_upstream(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock, CACHE_MODE="off"))
    for _ in range(2):
        response = await client.post("/chat", json=ZERO)
        assert "x-modelrouter-cache" not in response.headers
    assert await mock.count() == 2
    assert (await (await client.get("/health")).json())["cache"] == "off"


async def test_errors_are_never_cached(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**groq_only(mock, "status=500", BACKOFF_BASE_SECONDS="0"))
    for _ in range(2):
        response = await client.post("/chat", json=ZERO)
        assert response.status == 502
    assert await mock.count("status=500") == 2


async def test_cut_streams_are_never_cached(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**groq_only(mock, "stream_error_after=2", BACKOFF_BASE_SECONDS="0"))
    for _ in range(2):
        response = await client.post("/stream", json=ZERO)
        cut_stream_error(parse_sse(await response.text()))
        assert response.headers["x-modelrouter-cache"] == "miss"
    assert await mock.count("stream_error_after=2") == 2


async def test_cache_control_no_cache_skips_the_lookup_and_no_store_the_write(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    fresh = await client.post("/chat", json=ZERO, headers={"Cache-Control": "no-store"})
    assert fresh.headers["x-modelrouter-cache"] == "miss"
    response = await client.post("/chat", json=ZERO, headers={"Cache-Control": "no-cache"})
    assert response.headers["x-modelrouter-cache"] == "bypass"  # not looked up, but stored
    response = await client.post("/chat", json=ZERO)
    assert response.headers["x-modelrouter-cache"] == "hit"
    response = await client.post("/chat", json=ZERO, headers={"Cache-Control": "no-cache"})
    assert response.headers["x-modelrouter-cache"] == "bypass"
    assert await mock.count() == 3


async def test_the_openai_api_honours_x_modelrouter_cache_off(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**groq_only(mock))
    body = {"model": "auto", "temperature": 0, **USER}
    off = {"x-modelrouter-cache": "off"}
    response = await client.post("/v1/chat/completions", json=body, headers=off)
    assert response.headers["x-modelrouter-cache"] == "bypass"
    response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["x-modelrouter-cache"] == "miss"  # the one before stored nothing
    response = await client.post("/v1/chat/completions", json=body, headers=off)
    assert response.headers["x-modelrouter-cache"] == "bypass"
    assert await mock.count() == 3


async def test_a_request_the_router_refuses_bypasses_the_cache(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock))
    response = await client.post("/chat", json={**ZERO, "provider": "nowhere"})
    assert response.status == 400
    assert await mock.count() == 0


# -- streams -------------------------------------------------------------------------------------
async def test_a_streamed_replay_is_identical_to_the_original(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**groq_only(mock))
    first = await client.post("/stream", json=ZERO)
    original = await first.read()
    second = await client.post("/stream", json=ZERO)
    assert (first.headers["x-modelrouter-cache"], second.headers["x-modelrouter-cache"]) == (
        "miss",
        "hit",
    )
    assert await second.read() == original
    assert original.endswith(b"data: [DONE]\n\n")
    body = {"model": "auto", "temperature": 0, "max_tokens": 50, "stream": True, **USER}
    body["stream_options"] = {"include_usage": True}
    first = await client.post("/v1/chat/completions", json=body)
    second = await client.post("/v1/chat/completions", json=body)
    assert first.headers["x-modelrouter-cache"] == "miss"
    assert second.headers["x-modelrouter-cache"] == "hit"
    events = openai_stream_normalised(await first.text())
    replayed = openai_stream_normalised(await second.text())
    costs = (events[-2][1]["usage"].pop("cost_usd"), replayed[-2][1]["usage"].pop("cost_usd"))
    assert costs == (7.5e-06, 0)  # the replay cost nothing
    assert replayed == events
    assert events[-1] == ("message", "[DONE]")
    assert events[-2][1]["usage"]["completion_tokens"] == 8
    assert await mock.count() == 2
    # The same request streamed through the other API family is the same answer.
    response = await client.post("/v1/chat/completions", json={**ZERO, "stream": True})
    assert response.headers["x-modelrouter-cache"] == "hit"
    await response.read()
    assert await mock.count() == 2


async def test_a_late_joiner_gets_the_events_so_far_then_the_rest_live(
    gateway: Gateway, mock: Mock
) -> None:
    spec = "token_delay=0.2,tokens=8"  # 1.6 s: the joiner arrives well before the end
    client = await gateway(**groq_only(mock, spec))
    first = await client.post("/stream", json=ZERO)
    head = await first.content.readuntil(b"\n\n")  # the leader's stream is under way
    assert head == b"data: Hello\n\n"
    await asyncio.sleep(0.12)
    second = await client.post("/stream", json=ZERO)
    assert second.headers["x-modelrouter-cache"] == "hit"
    joined = await second.read()
    assert head + await first.read() == joined
    assert joined.endswith(b"data: [DONE]\n\n")
    assert await mock.count(spec) == 1
    assert (await cache_counts(client))["coalesced"] == 1


# -- coalescing ----------------------------------------------------------------------------------
async def test_fifty_identical_concurrent_requests_cost_one_upstream_call(
    gateway: Gateway, mock: Mock
) -> None:
    # no-store: nothing is kept once the call ends, so one call for all fifty is coalescing.
    spec = "first_delay=1.5"
    client = await gateway(**groq_only(mock, spec))

    async def ask() -> tuple[int, str, dict[str, Any]]:
        response = await client.post("/chat", json=ZERO, headers={"Cache-Control": "no-store"})
        return response.status, response.headers["x-modelrouter-cache"], await response.json()

    results = await asyncio.gather(*(ask() for _ in range(50)))
    assert {status for status, _, _ in results} == {200}
    assert sorted(cache for _, cache, _ in results).count("hit") == 49
    assert len({body["text"] for _, _, body in results}) == 1
    assert await mock.count(spec) == 1
    counts = await cache_counts(client)
    assert (counts["hit"], counts["miss"], counts["coalesced"]) == (49, 1, 49)
    # And nothing was stored.
    response = await client.post("/chat", json=ZERO)
    assert response.headers["x-modelrouter-cache"] == "miss"


async def test_fifty_identical_concurrent_streams_cost_one_upstream_call(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock, PACED, MAX_CONCURRENT_STREAMS="100"))
    bodies = await asyncio.gather(*(client.post("/stream", json=ZERO) for _ in range(50)))
    texts = {await response.read() for response in bodies}
    assert len(texts) == 1
    assert next(iter(texts)).endswith(b"data: [DONE]\n\n")
    assert await mock.count(PACED) == 1


@pytest.mark.parametrize("path", ["/stream", "/v1/chat/completions"])
async def test_streams_that_join_a_coalesced_call_take_no_stream_slot(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    # MAX_CONCURRENT_STREAMS bounds the streams that call upstream: here, one.
    client = await gateway(**groq_only(mock, PACED, MAX_CONCURRENT_STREAMS="10"))
    body = {**ZERO, "stream": True} if path.startswith("/v1") else ZERO
    responses = await asyncio.gather(*(client.post(path, json=body) for _ in range(50)))
    assert [response.status for response in responses] == [200] * 50
    for response in responses:
        assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert await mock.count(PACED) == 1


async def test_joined_streams_whose_call_failed_go_upstream_again_within_the_cap(
    gateway: Gateway, mock: Mock
) -> None:
    spec = "status=500,fail_first=1,first_delay=1.0"
    env = groq_only(mock, spec, BACKOFF_BASE_SECONDS="0", MAX_CONCURRENT_STREAMS="1")
    client = await gateway(**env)
    body = {**ZERO, "fallback": False}
    leader = asyncio.ensure_future(client.post("/stream", json=body))

    async def leader_went_upstream() -> bool:
        return await mock.count(spec) == 1

    async def three_joined() -> bool:
        return (await cache_counts(client))["coalesced"] == 3

    await wait_until(leader_went_upstream)
    waiters = [asyncio.ensure_future(client.post("/stream", json=body)) for _ in range(3)]
    await wait_until(three_joined)  # the only slot is the leader's
    assert (await leader).status == 502
    # The call failed before answering: one waiter takes the slot and leads a new call, the
    # others join it (not three calls, none of them in a slot, as the cache's own rerouting
    # of a joined request would make).
    responses = [await waiter for waiter in waiters]
    assert [response.status for response in responses] == [200, 200, 200]
    assert sorted(response.headers["x-modelrouter-cache"] for response in responses) == [
        "hit",
        "hit",
        "miss",
    ]
    assert await mock.count(spec) == 2


async def test_a_joiner_that_disconnects_does_not_cancel_the_call_for_the_others(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**groq_only(mock, PACED))
    leader = await client.post("/stream", json=ZERO)
    async with aiohttp.ClientSession() as session:
        joiner = await session.post(f"{client.make_url('/stream')}", json=ZERO)
        assert await joiner.content.readuntil(b"\n\n") == b"data: Hello\n\n"
        joiner.close()  # gone mid-stream
    text = await leader.read()
    assert text.endswith(b"data: [DONE]\n\n")
    assert await mock.count(PACED) == 1
    assert (await client.post("/stream", json=ZERO)).headers["x-modelrouter-cache"] == "hit"


async def test_when_every_client_leaves_the_upstream_call_stops(
    gateway: Gateway, mock: Mock
) -> None:
    spec = "token_delay=0.1,tokens=50"
    client = await gateway(**groq_only(mock, spec))
    async with aiohttp.ClientSession() as session:
        url = f"{client.make_url('/stream')}"
        streams = [await session.post(url, json=ZERO) for _ in range(3)]
        for response in streams:
            await response.content.readuntil(b"\n\n")
        assert (await mock.stats())["open_streams"] == 1
        for response in streams:
            response.close()

    async def closed() -> bool:
        return (await mock.stats())["open_streams"] == 0

    await wait_until(closed)
    # Nothing was stored: the next one goes upstream again.
    response = await client.post("/stream", json=ZERO)
    assert response.headers["x-modelrouter-cache"] == "miss"


async def test_when_the_leader_fails_each_waiter_is_routed_on_its_own(
    gateway: Gateway, mock: Mock
) -> None:
    spec = "status=500,fail_first=1,first_delay=0.3"
    client = await gateway(**groq_only(mock, spec, BACKOFF_BASE_SECONDS="0"))
    body = {**ZERO, "fallback": False}
    leader = asyncio.ensure_future(client.post("/chat", json=body))
    await asyncio.sleep(0.1)
    waiters = [asyncio.ensure_future(client.post("/chat", json=body)) for _ in range(3)]
    failed = await leader
    assert failed.status == 502
    answered = [await waiter for waiter in waiters]
    assert [response.status for response in answered] == [200, 200, 200]
    # Each waiter went upstream on its own (and its header says so).
    assert {response.headers["x-modelrouter-cache"] for response in answered} == {"miss"}
    assert await mock.count(spec) == 4


async def test_a_client_error_is_shared_with_the_waiters(gateway: Gateway, mock: Mock) -> None:
    spec = "status=400,first_delay=1.0"
    client = await gateway(**groq_only(mock, spec))
    results = await asyncio.gather(*(client.post("/chat", json=ZERO) for _ in range(3)))
    assert [response.status for response in results] == [400, 400, 400]
    assert await mock.count(spec) == 1


async def test_health_names_the_cache_store(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**groq_only(mock))
    assert (await (await client.get("/health")).json())["cache"] == "memory"


@pytest.mark.parametrize("value", ["sometimes", "ALL!"])
async def test_a_bad_cache_mode_is_refused_at_start_up(value: str) -> None:
    from modelrouter.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CACHE_MODE"):
        load_settings({"CACHE_MODE": value})
