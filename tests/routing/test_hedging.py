"""The hedging policy: who may hedge, after how long, and within what share of the traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrouter.config import ConfigError, HedgeSettings, ModelGroup
from modelrouter.config import load_settings as load_environment
from modelrouter.routing import load_settings
from modelrouter.routing.hedging import (
    HINTS,
    ExtraBudget,
    Hedging,
    Hints,
    configured,
    header_choice,
    p95,
    wants,
)
from modelrouter.schemas import ChatRequest, Message
from modelrouter.state.memory import MemoryState
from tests.routing.support import BASE_ENV, settings_from, write


def request(model: str | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], model=model)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hedges_are_refused_once_they_would_pass_the_share_of_recent_requests() -> None:
    clock = Clock()
    budget = ExtraBudget(0.1, clock=clock)
    allowed = 0
    for _ in range(100):
        budget.request()
        allowed += budget.allow()
    assert allowed == 10  # the 10th, 20th... request: never over a tenth
    clock.now += 61  # a minute later the window is empty again: no credit carried over
    budget.request()
    assert not budget.allow()
    for _ in range(9):
        budget.request()
    assert budget.allow()


def test_a_zero_share_never_hedges() -> None:
    budget = ExtraBudget(0.0)
    for _ in range(50):
        budget.request()
    assert not budget.allow()


async def test_the_delay_is_the_default_until_enough_samples_then_their_p95_over_the_floor() -> (
    None
):
    hedging = Hedging(HedgeSettings(mode="on", min_ms=50.0), {})
    assert hedging.delay("groq") == 1.0  # nothing measured yet
    for index in range(49):
        hedging.observe("groq", 0.01 * (index + 1))
    share = MemoryState().share_samples
    await hedging.refresh(share)
    assert hedging.delay("groq") == 1.0  # 49 samples: not trusted yet
    hedging.observe("groq", 0.5)
    await hedging.refresh(share)
    assert hedging.delay("groq") == pytest.approx(p95([0.01 * (i + 1) for i in range(49)] + [0.5]))
    for _ in range(500):
        hedging.observe("fast", 0.001)
    await hedging.refresh(share)
    assert hedging.delay("fast") == 0.05  # HEDGE_MIN_MS


def test_a_fixed_delay_ignores_the_samples() -> None:
    hedging = Hedging(HedgeSettings(mode="on", after_ms=250.0), {})
    hedging.observe("groq", 5.0)
    assert hedging.delay("groq") == 0.25


def test_p95_is_the_sample_below_which_95_percent_fall() -> None:
    assert p95([float(n) for n in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


@pytest.mark.parametrize(
    ("mode", "asked", "hedges"),
    [
        ("off", True, False),
        ("on", None, True),
        ("on", False, False),
        ("allow", None, False),
        ("allow", True, True),
        ("allow", False, False),
    ],
)
def test_the_mode_and_the_header_decide(mode: str, asked: bool | None, hedges: bool) -> None:
    assert wants(mode, asked) is hedges  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "choice"), [("on", True), (" ON ", True), ("1", True), ("off", False), ("x", None)]
)
def test_the_header_reads_on_and_off(value: str, choice: bool | None) -> None:
    assert header_choice(value) is choice
    assert header_choice(None) is None


def test_a_group_setting_overrides_hedge_for_its_requests() -> None:
    hedging = Hedging(HedgeSettings(mode="off"), {"fast": "on", "smart": None})
    token = HINTS.set(Hints())
    try:
        assert hedging.applies(request("fast"))
        assert not hedging.applies(request("smart"))
        assert not hedging.applies(request())
        by_default = Hedging(HedgeSettings(), {"fast": "on"}, default_model="fast")
        assert by_default.applies(request())  # auto: the default group's setting
        assert by_default.applies(request("auto"))
        HINTS.set(Hints(hedge=False))
        assert not hedging.applies(request("fast"))
    finally:
        HINTS.reset(token)


def test_hedging_is_configured_by_the_environment_or_a_group() -> None:
    assert not configured(HedgeSettings(), [ModelGroup("fast")])
    assert not configured(HedgeSettings(), [ModelGroup("fast", hedge="off")])
    assert configured(HedgeSettings(), [ModelGroup("fast", hedge="allow")])
    assert configured(HedgeSettings(mode="allow"), [])


def test_the_environment_sets_hedging_and_refuses_bad_values() -> None:
    env = {"HEDGE": "allow", "HEDGE_AFTER_MS": "300", "HEDGE_MAX_EXTRA": "0.05"}
    settings = load_environment(env)
    assert settings.hedge == HedgeSettings(mode="allow", after_ms=300.0, max_extra=0.05)
    assert load_environment({}).hedge.after_ms is None  # the p95 decides
    with pytest.raises(ConfigError) as raised:
        load_environment({"HEDGE": "sometimes", "HEDGE_MAX_EXTRA": "2", "HEDGE_MIN_MS": "0"})
    assert len(raised.value.problems) == 3


HEDGED_FILE = """
deployments:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:9/v1", models: {fast: m, smart: m}}
models:
  fast: {hedge: on}
  smart: {hedge: allow}
"""


def test_a_group_of_the_routing_file_sets_its_hedging(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, HEDGED_FILE)
    assert {g.name: g.hedge for g in settings.model_groups} == {"fast": "on", "smart": "allow"}


def test_a_bad_hedge_value_in_the_routing_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "router.yaml", HEDGED_FILE.replace("hedge: allow", "hedge: maybe"))
    with pytest.raises(ConfigError) as raised:
        load_settings(BASE_ENV | {"MODELROUTER_CONFIG": path})
    (problem,) = raised.value.problems
    assert problem.startswith(f"{path}:5: "), problem
    assert "hedge 'maybe'" in problem, problem
