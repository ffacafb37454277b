"""Planning over model groups, at the plan level (no gateway): which deployments a request
resolves to, and in which order each strategy tries them."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import msgspec
import pytest

from modelrouter.config import ModelGroup, Price, ProviderSettings, Strategy
from modelrouter.providers import build_adapter
from modelrouter.routing import Latency, PlanError, Planner, Strategies
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.prices import price_table

MESSAGES = [{"role": "user", "content": "hello"}]


class FakeActor:
    """What planning reads of a provider actor: its settings, adapter, tickets and latency."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.provider = settings
        self.adapter = build_adapter(settings)
        self.in_flight = 0
        self.elsewhere = 0  # the other replicas' (routing/fleet.py)
        self.latency = Latency()


def deployment(name: str, models: dict[str, str], **extra: Any) -> FakeActor:
    kind = extra.pop("kind", "openai")
    settings = ProviderSettings(
        name,
        kind,
        "http://127.0.0.1:9",
        next(iter(models.values())),
        None,
        0,
        models=models,
        from_file=True,
        **extra,
    )
    return FakeActor(settings)


def planner(
    actors: list[FakeActor],
    groups: list[ModelGroup],
    *,
    seed: int = 7,
    **extra: Any,
) -> Planner:
    return Planner(
        {a.name: a for a in actors},  # type: ignore[misc]
        groups=groups,
        default_model=groups[0].name,
        strategies=Strategies(rng=random.Random(seed)),
        **extra,
    )


def request(model: str | None = None, **fields: Any) -> ChatRequest:
    body: dict[str, Any] = {"messages": MESSAGES, **fields}
    if model is not None:
        body["model"] = model
    return msgspec.convert(body, ChatRequest)


def names(candidates: list[Any]) -> list[tuple[str, str]]:
    return [(c.actor.name, c.model) for c in candidates]


def first(plan: Planner, chat: ChatRequest, *, stream: bool = False) -> str:
    return plan.plan(chat, stream=stream)[0].actor.name


def group_of(
    strategy: Strategy, *names_: str, upstream: str = "m"
) -> tuple[list[FakeActor], Planner]:
    actors = [deployment(name, {"fast": f"{upstream}-{name}"}) for name in names_]
    return actors, planner(actors, [ModelGroup("fast", strategy)])


def test_a_group_is_every_deployment_that_lists_it_then_its_fallbacks() -> None:
    a = deployment("a", {"fast": "llama-8b"})
    b = deployment("b", {"fast": "llama-8b-turbo", "smart": "llama-70b"})
    c = deployment("c", {"smart": "gpt-4o"})
    plan = planner([a, b, c], [ModelGroup("fast", fallbacks=("smart",)), ModelGroup("smart")])
    expected = [("a", "llama-8b"), ("b", "llama-8b-turbo"), ("b", "llama-70b"), ("c", "gpt-4o")]
    assert names(plan.plan(request("fast"))) == expected
    assert names(plan.plan(request("auto"))) == expected, "auto is the default group"
    assert names(plan.plan(request())) == expected
    assert names(plan.plan(request("fast", fallback=False))) == [("a", "llama-8b")]
    assert names(plan.plan(request("smart"))) == [("b", "llama-70b"), ("c", "gpt-4o")]


def test_name_slash_model_addresses_one_deployment_then_the_rest_of_its_group() -> None:
    a = deployment("a", {"fast": "llama-8b"})
    b = deployment("b", {"fast": "llama-8b-turbo"})
    plan = planner([a, b], [ModelGroup("fast")])
    assert names(plan.plan(request("b/fast"))) == [("b", "llama-8b-turbo"), ("a", "llama-8b")]
    assert names(plan.plan(request("b/fast", fallback=False))) == [("b", "llama-8b-turbo")]
    assert names(plan.plan(request("b/other-model"))) == [("b", "other-model")]
    assert names(plan.plan(request("fast", provider="a"))) == [
        ("a", "llama-8b"),
        ("b", "llama-8b-turbo"),
    ]


def test_an_unknown_deployment_or_model_is_not_found() -> None:
    _, plan = group_of("ordered", "a")
    with pytest.raises(PlanError) as raised:
        plan.plan(request("nosuch/fast"))
    assert raised.value.status == 404
    with pytest.raises(PlanError) as raised:
        plan.plan(request("slow"))
    assert "a model group" in str(raised.value)


def test_weighted_three_to_one_sends_three_quarters_first_to_the_heavier() -> None:
    heavy = deployment("heavy", {"fast": "m"}, weight=3)
    light = deployment("light", {"fast": "m"}, weight=1)
    plan = planner([heavy, light], [ModelGroup("fast", "weighted")])
    firsts = Counter(plan.plan(request("fast"))[0].actor.name for _ in range(2000))
    assert 0.70 <= firsts["heavy"] / 2000 <= 0.80, firsts
    assert {len(plan.plan(request("fast"))) for _ in range(50)} == {2}, "the rest is the fallback"


def test_least_busy_puts_the_deployment_with_fewest_in_flight_first() -> None:
    (a, b, c), plan = group_of("least-busy", "a", "b", "c")
    a.in_flight, b.in_flight, c.in_flight = 4, 1, 2
    assert [n for n, _ in names(plan.plan(request("fast")))] == ["b", "c", "a"]
    a.in_flight = b.in_flight = c.in_flight = 0
    firsts = Counter(plan.plan(request("fast"))[0].actor.name for _ in range(30))
    assert firsts == {"a": 10, "b": 10, "c": 10}, "ties are taken in turn"


def test_latency_prefers_the_lowest_recent_time_to_first_byte_per_mode() -> None:
    (a, b, c), plan = group_of("latency", "a", "b", "c")
    assert first(plan, request("fast")) == "a", "unmeasured ones first, in file order"
    for actor, whole, stream in ((a, 0.2, 0.01), (b, 0.05, 0.3), (c, 0.01, 0.05)):
        actor.latency.observe(whole, stream=False)
        actor.latency.observe(stream, stream=True)
    wholes = Counter(plan.plan(request("fast"))[0].actor.name for _ in range(1000))
    streams = Counter(plan.plan(request("fast"), stream=True)[0].actor.name for _ in range(1000))
    assert wholes["c"] >= 930, wholes
    assert streams["a"] >= 930, streams
    assert wholes["a"] + wholes["b"] > 0, "a small share explores the others"


def test_latency_explores_only_once_every_deployment_is_measured() -> None:
    # A random pick could put the one measured deployment before an unmeasured one (the fleet
    # test's warm-up once measured d0 twice); an unmeasured one first is exploration enough.
    (a, b, c), plan = group_of("latency", "a", "b", "c")
    plan.strategies.explore = 1.0
    a.latency.observe(0.01, stream=False)
    assert {first(plan, request("fast")) for _ in range(50)} == {"b"}
    b.latency.observe(0.01, stream=False)
    assert {first(plan, request("fast")) for _ in range(50)} == {"c"}
    c.latency.observe(0.01, stream=False)
    firsts = {first(plan, request("fast")) for _ in range(50)}
    assert firsts == {"b", "c"}, "measured, the first is never the one exploration keeps"


def test_latency_follows_a_deployment_that_slows_down() -> None:
    (a, b), plan = group_of("latency", "a", "b")
    a.latency.observe(0.01, stream=False)
    b.latency.observe(0.05, stream=False)
    assert first(plan, request("fast")) == "a"
    a.latency.observe(0.3, stream=False)  # one slow answer may be a stall: it counts as 0.04
    assert first(plan, request("fast")) == "a"
    a.latency.observe(0.3, stream=False)  # a second one in a row is a slowdown
    assert first(plan, request("fast")) == "b"


def test_one_stall_does_not_move_the_fastest_behind_the_others() -> None:
    (a, b), plan = group_of("latency", "a", "b")
    for _ in range(3):
        a.latency.observe(0.01, stream=True)
        b.latency.observe(0.05, stream=True)
    a.latency.observe(2.0, stream=True)  # one stall on this host
    assert first(plan, request("fast"), stream=True) == "a"
    assert a.latency.estimate(stream=True) == pytest.approx(0.01 + 0.3 * 0.03)
    a.latency.observe(0.01, stream=True)
    a.latency.observe(2.0, stream=True)  # not in a row: capped again
    assert first(plan, request("fast"), stream=True) == "a"
    a.latency.observe(2.0, stream=False)  # the other mode has its own history
    assert a.latency.estimate(stream=False) == 2.0, "the first sample is taken as it is"


def test_cost_tries_the_cheapest_priced_first_and_the_unpriced_last() -> None:
    free = deployment("unpriced", {"fast": "mystery"})
    dear = deployment("dear", {"fast": "m"})
    cheap = deployment("cheap", {"fast": "m"})
    claude = deployment("claude", {"fast": "claude-haiku-4-5"}, kind="anthropic")
    prices = price_table(
        {"dear/m": Price(input=5.0, output=15.0), "cheap/m": Price(input=0.1, output=0.2)}
    )
    plan = planner([free, dear, cheap, claude], [ModelGroup("fast", "cost")], prices=prices)
    # claude-haiku-4-5 is priced by its kind from the bundled table (1 + 5 per million).
    assert [n for n, _ in names(plan.plan(request("fast")))] == [
        "cheap",
        "claude",
        "dear",
        "unpriced",
    ]


def test_the_cache_chain_is_the_same_whatever_the_strategy_draws() -> None:
    _, plan = group_of("weighted", "a", "b", "c")
    chains = {tuple(names(plan.chain(request("fast")))) for _ in range(50)}
    assert chains == {(("a", "m-a"), ("b", "m-b"), ("c", "m-c"))}
