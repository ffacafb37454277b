"""The response cache's parts alone: the key, the stored form, the memory store's budget, a
flight's rules on what it stores, and the per-request policy read from headers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from modelrouter.actors.relay import Relay
from modelrouter.cache.codec import BadEntry, decode, encode, event_size
from modelrouter.cache.flight import Flight, Member
from modelrouter.cache.key import cache_key, cacheable
from modelrouter.cache.memory import MemoryStore
from modelrouter.events import Answering, Chunk, Done, Event, Failed, ToolCallDelta, Usage
from modelrouter.observability import Metrics
from modelrouter.schemas import ChatRequest, Message
from modelrouter.web.caching import cache_policy

REQUEST = ChatRequest(messages=[Message("user", "hi")], temperature=0)
CHAIN = (("groq", "llama"), ("openrouter", "meta"))
ANSWER: list[Event] = [
    Answering("groq", "llama", 1),
    Chunk("Hel"),
    Chunk("lo"),
    Usage(2, 2),
    Done(),
]


def key(request: ChatRequest = REQUEST, chain: Any = CHAIN, **kw: Any) -> str:
    return cache_key(
        request, chain, stream=kw.pop("stream", False), with_user=kw.pop("user", False)
    )


# -- the key -------------------------------------------------------------------------------------
def test_the_key_ignores_routing_spelling_and_user_but_not_the_answer_shaping_fields() -> None:
    spelled = ChatRequest(
        messages=[Message("user", "hi")], temperature=0.0, model="groq/llama", user="ann"
    )
    assert key(spelled) == key()
    assert key(spelled, user=True) != key()
    assert key(ChatRequest(messages=[Message("user", "hi")], temperature=0, max_tokens=9)) != key()
    assert key(ChatRequest(messages=[Message("user", "hi!")], temperature=0)) != key()
    assert key(chain=CHAIN[:1]) != key()
    assert key(stream=True) != key()


def test_deterministic_means_temperature_zero_or_a_seed() -> None:
    assert cacheable(REQUEST, "deterministic")
    assert cacheable(ChatRequest(messages=REQUEST.messages, seed=3), "deterministic")
    assert not cacheable(ChatRequest(messages=REQUEST.messages), "deterministic")
    assert cacheable(ChatRequest(messages=REQUEST.messages), "all")
    assert not cacheable(REQUEST, "off")


# -- the stored form -----------------------------------------------------------------------------
def test_an_answer_survives_encoding_and_a_foreign_value_is_refused() -> None:
    answer = [*ANSWER[:1], ToolCallDelta(0, "call_1", "f", '{"a": 1}'), *ANSWER[1:]]
    assert decode(encode(answer)) == answer
    for bad in (b"not json", b"[]", b'[["z", 1]]', encode(ANSWER[1:])):
        with pytest.raises(BadEntry):
            decode(bad)


# -- the memory store ----------------------------------------------------------------------------
def test_the_memory_store_evicts_the_least_recently_used_within_its_budget() -> None:
    metrics = Metrics()
    size = sum(event_size(e) for e in ANSWER)
    store = MemoryStore(metrics, max_bytes=size * 2)
    store.put("a", ANSWER, size)
    store.put("b", ANSWER, size)
    assert store.get("a") == ANSWER  # "a" is now the most recently used
    store.put("c", ANSWER, size)
    assert store.get("b") is None
    assert store.get("a") == ANSWER
    assert store.bytes == size * 2
    assert metrics.cache_evictions._value.get() == 1
    store.put("huge", ANSWER, size * 3)  # larger than the whole budget: not kept
    assert store.get("huge") is None


def test_the_memory_store_forgets_an_answer_after_its_ttl() -> None:
    now = [0.0]
    store = MemoryStore(Metrics(), ttl=10, clock=lambda: now[0])
    store.put("a", ANSWER, 100)
    now[0] = 9.9
    assert store.get("a") == ANSWER
    now[0] = 10.0
    assert store.get("a") is None
    assert store.bytes == 0


# -- a flight's answer ---------------------------------------------------------------------------
def flight(ended: list[Any], *, limit: int = 10_000) -> Flight:
    return Flight(
        "k",
        stream=True,
        deadline=1e9,
        limit=limit,
        store=True,
        on_end=lambda f, e: ended.append(f.answer(e)),
        reroute=lambda f, m: None,
    )


async def run(events: list[Event], **kw: Any) -> tuple[list[Any], list[Event]]:
    ended: list[Any] = []
    fl = flight(ended, **kw)
    relay = Relay(maxsize=4)
    fl.join(Member(relay, REQUEST, "r1", 1e9))
    got: list[Event] = []

    async def read() -> None:
        while not got or type(got[-1]) not in (Done, Failed):
            got.extend(await relay.take())

    reader = asyncio.ensure_future(read())
    for event in events[:-1]:
        if type(event) is Answering:
            fl.announce(event)  # type: ignore[arg-type]
        elif not fl.offer(event):
            await fl.put(event)
    fl.finish(events[-1])  # type: ignore[arg-type]
    await reader
    return ended, got


async def test_a_whole_answer_is_stored_from_its_answering_provider_on() -> None:
    events: list[Event] = [Answering("groq", "m", 1), Answering("openrouter", "m", 2), *ANSWER[1:]]
    ended, got = await run(events)
    assert got == events
    assert ended == [[events[1], *ANSWER[1:]]]


async def test_a_refusal_a_failure_and_an_oversized_answer_are_not_stored() -> None:
    refusal = [*ANSWER[:-1], Done("content_filter")]
    assert (await run(refusal))[0] == [None]
    cut = [*ANSWER[:-1], Failed(502, "upstream_error", "cut")]
    assert (await run(cut))[0] == [None]
    many: list[Event] = [ANSWER[0], *(Chunk("x" * 100) for _ in range(200)), Done()]
    ended, got = await run(many, limit=2000)
    assert ended == [None]
    assert got == many  # the member still got all of it, through a 4-event relay


async def test_a_slow_member_paces_the_writer_and_a_late_one_gets_what_came_before() -> None:
    ended: list[Any] = []
    fl = flight(ended)
    first = Relay(maxsize=3)  # the announced provider takes a place too
    fl.join(Member(first, REQUEST, "r1", 1e9))
    fl.announce(Answering("groq", "m", 1))
    assert fl.offer(Chunk("a"))
    assert fl.offer(Chunk("b"))
    assert fl.offer(Chunk("c"))  # kept in the flight's log: the member is one behind
    assert not fl.offer(Chunk("d"))  # no further while it lags
    writer = asyncio.ensure_future(fl.put(Chunk("d")))
    await asyncio.sleep(0)
    assert not writer.done()
    late = Relay(maxsize=2)
    fl.join(Member(late, REQUEST, "r2", 1e9))
    assert await late.take() == [Answering("groq", "m", 1), Chunk("a"), Chunk("b"), Chunk("c")]
    assert await first.take() == [Answering("groq", "m", 1), Chunk("a"), Chunk("b")]
    await writer
    fl.finish(Done())
    assert await first.take() == [Chunk("c"), Chunk("d"), Done()]
    assert await late.take() == [Chunk("d"), Done()]
    assert ended == [[Answering("groq", "m", 1), *(Chunk(c) for c in "abcd"), Done()]]


# -- the policy ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "headers", "lookup", "store"),
    [
        ("/chat", {}, True, True),
        ("/chat", {"Cache-Control": "no-cache"}, False, True),
        ("/chat", {"Cache-Control": "max-age=0, No-Store"}, True, False),
        ("/chat", {"Cache-Control": "no-cache,no-store"}, False, False),
        ("/chat", {"x-modelrouter-cache": "off"}, True, True),  # only the OpenAI API reads it
        ("/v1/chat/completions", {"x-modelrouter-cache": "OFF"}, False, False),
        ("/v1/chat/completions", {"x-modelrouter-cache": "on"}, True, True),
    ],
)
def test_the_request_policy_follows_its_headers(
    path: str, headers: dict[str, str], lookup: bool, store: bool
) -> None:
    policy = cache_policy(make_mocked_request("POST", path, headers=headers))
    assert (policy.lookup, policy.store) == (lookup, store)
