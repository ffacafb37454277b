"""The actor boundary: the failure rules of an actor, the router as a bounded owner of routing
tasks, the system facade, and the web layer reaching the actor side through it alone."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from modelrouter.actors.base import Actor, ActorStopped
from modelrouter.actors.relay import Relay
from modelrouter.actors.router import Overloaded
from modelrouter.actors.system import ActorSystem
from modelrouter.config import load_settings
from modelrouter.events import Answering, Chunk, Done, Failed
from modelrouter.observability import REDACTOR, Metrics
from modelrouter.schemas import ChatRequest, Message
from modelrouter.state import HealthRecord
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, two_providers, wait_until

WEB = Path(__file__).resolve().parent.parent / "modelrouter" / "web"
REQUEST = ChatRequest(messages=[Message("user", "hello")])


class Gate(Actor[Any]):
    """Handles each message by waiting at a gate; remembers what it handed to `orphaned`."""

    def __init__(self) -> None:
        super().__init__("gate")
        self.gate = asyncio.Event()
        self.orphans: list[Any] = []

    async def handle(self, message: Any) -> Any:
        await self.gate.wait()
        return message

    def orphaned(self, result: Any) -> None:
        self.orphans.append(result)


async def _true(value: bool) -> bool:
    return value


# -- the actor's failure rules --------------------------------------------------------------------


async def test_stop_fails_the_ask_the_loop_is_handling_with_actor_stopped() -> None:
    actor = Gate()
    actor.start()
    actor.tell("occupy")  # the loop is busy: the next ask goes through the mailbox
    await asyncio.sleep(0.01)
    in_flight = asyncio.create_task(actor.ask("x"))
    waiting = asyncio.create_task(actor.ask("y"))
    await asyncio.sleep(0.01)
    await actor.stop()
    for ask in (in_flight, waiting):
        with pytest.raises(ActorStopped):
            await asyncio.wait_for(ask, 1)


async def test_stop_during_the_loops_own_ask_answers_the_asker() -> None:
    actor = Gate()
    actor.start()
    await asyncio.sleep(0)
    actor.tell("first")  # queued: the loop takes it, then the ask below, from its mailbox
    asked = asyncio.create_task(actor.ask("second"))
    await asyncio.sleep(0.01)
    actor.gate.set()  # "first" ends; the loop now handles "second"... then stops mid-way
    actor.gate.clear()
    await asyncio.sleep(0.01)
    await actor.stop()
    with pytest.raises(ActorStopped):
        await asyncio.wait_for(asked, 1)


async def test_an_inline_ask_stopped_midway_fails_and_its_result_is_orphaned() -> None:
    actor = Gate()
    actor.start()
    await asyncio.sleep(0)  # parked on an empty mailbox: the ask runs in the asker's task
    asked = asyncio.create_task(actor.ask("late"))
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(actor.stop())
    await asyncio.sleep(0.01)
    actor.gate.set()  # the handler finishes after the stop
    with pytest.raises(ActorStopped):
        await asyncio.wait_for(asked, 1)
    await stopping
    assert actor.orphans == ["late"], "the result nobody may use is handed back for cleanup"


# -- the relay carries who answers ----------------------------------------------------------------


async def test_answering_is_read_with_the_first_event_of_the_answer_not_on_its_own() -> None:
    relay = Relay(maxsize=4, eager=True)
    reader = asyncio.create_task(relay.take())
    await asyncio.sleep(0.01)  # the reader waits
    relay.announce(Answering("groq", "m", 1))
    await asyncio.sleep(0.01)
    assert not reader.done(), "announcing wakes nobody"
    relay.offer(Chunk("hi"))
    assert await reader == [Answering("groq", "m", 1), Chunk("hi")]


# -- the router owns a bounded number of routing tasks --------------------------------------------


async def _system(mock: Mock, spec: str = "", **env: str) -> ActorSystem:
    settings = load_settings({"PROVIDER_ORDER": "groq", **two_providers(mock, groq=spec), **env})
    system = ActorSystem(settings, Metrics())
    await system.start()
    return system


def _route(system: ActorSystem, *, seconds: float = 10.0, stream: bool = False) -> Relay:
    deadline = asyncio.get_running_loop().time() + seconds
    return system.route(REQUEST, stream=stream, request_id="t-1", deadline=deadline)


async def _drain(relay: Relay) -> list[Any]:
    events: list[Any] = []
    while not events or type(events[-1]) not in (Done, Failed):
        events += await asyncio.wait_for(relay.take(), 5)
    return events


async def test_routing_past_the_limit_waits_in_the_pending_queue_then_is_overloaded(
    mock: Mock,
) -> None:
    system = await _system(mock, "first_delay=0.2")
    system.router.limit, system.router.pending_limit = 1, 1
    first, second = _route(system), _route(system)
    with pytest.raises(Overloaded):
        _route(system)
    assert system.snapshot().requests_pending == 1
    assert type((await _drain(first))[-1]) is Done
    assert type((await _drain(second))[-1]) is Done, "the pending request got the freed slot"
    await system.close()


async def test_a_polite_close_lets_running_requests_finish(mock: Mock) -> None:
    system = await _system(mock, "first_delay=0.2")
    relay = _route(system)
    await system.close(timeout=5)
    assert type((await _drain(relay))[-1]) is Done
    with pytest.raises(Overloaded):
        _route(system)


async def test_a_hard_close_tells_each_cut_request_why(mock: Mock) -> None:
    system = await _system(mock, "first_delay=5")
    relay = _route(system)
    await wait_until(lambda: _true(system.snapshot().providers[0].in_flight == 1))
    ending = Failed(503, "shutdown", "the gateway is shutting down", 1.0, retryable=True)
    await system.close(timeout=0.05, ending=ending)
    events = await _drain(relay)
    assert events[-1] == ending
    assert system.snapshot().providers[0].in_flight == 0, "the attempt was stopped too"


async def test_an_attempt_is_stopped_when_its_reader_leaves(mock: Mock) -> None:
    system = await _system(mock, "first_delay=5")
    relay = _route(system)
    await wait_until(lambda: _true(system.snapshot().providers[0].in_flight == 1))
    relay.close()  # the client went away
    await wait_until(lambda: _true(system.snapshot().providers[0].in_flight == 0))
    assert system.snapshot().requests_in_flight == 0
    await system.close()


# -- the facade -----------------------------------------------------------------------------------


async def test_snapshot_and_health_listener_report_a_provider_blacklisted(mock: Mock) -> None:
    system = await _system(mock, "status=500")
    heard: list[str] = []
    system.on_health_change(lambda view: heard.append(f"{view.name}:{view.state}"))
    events = await _drain(_route(system))
    assert events[0] == Answering("groq", "llama-3.3-70b-versatile", 1)
    assert type(events[-1]) is Failed
    view = system.snapshot()
    (groq,) = view.providers
    assert (groq.state, groq.failures, groq.last_reason) == ("blacklisted", 1, "server_error")
    assert groq.blacklisted_until > time.time()
    assert heard[-1] == "groq:blacklisted"
    assert heard.count("groq:blacklisted") == 1
    await system.close()
    assert not system.snapshot().running


async def test_secrets_belong_to_the_running_system(mock: Mock) -> None:
    secret = "sk-system-owned-secret-0042"
    REDACTOR.remove([secret] * 8)  # nobody else holds it
    assert REDACTOR(f"x {secret}") != f"x {secret}"  # a credential shape: the pattern catches it
    plain = "plain-system-secret-value-7"
    system = await _system(mock, API_KEY=plain)
    assert REDACTOR(f"key {plain}") == "key [REDACTED]"
    await system.close()
    assert REDACTOR(f"key {plain}") == f"key {plain}", "given back when the system closed"


async def test_retry_after_beyond_backoff_max_is_capped(mock: Mock) -> None:
    system = await _system(mock, "status=429,retry_after=99999999", BACKOFF_MAX_SECONDS="60")
    await _drain(_route(system))
    (groq,) = system.snapshot().providers
    assert groq.state == "blacklisted"
    assert groq.blacklisted_until <= time.time() + 60
    await system.close()


async def test_a_stored_blacklist_longer_than_backoff_max_is_cut_at_start(mock: Mock) -> None:
    settings = load_settings(
        {"PROVIDER_ORDER": "groq", **two_providers(mock), "BACKOFF_MAX_SECONDS": "30"}
    )
    system = ActorSystem(settings, Metrics())
    await system.state.save_health("groq", HealthRecord(3, time.time() + 10**8, "rate_limited"))
    await system.start()
    (groq,) = system.snapshot().providers
    assert groq.state == "blacklisted"
    assert groq.blacklisted_until <= time.time() + 30
    await system.close()


async def test_ready_says_503_once_the_system_is_closed(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    assert (await client.post("/chat", json=USER)).status == 200
    await client.app[RUNTIME].system.close()
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["reason"] == "not running"


# -- the boundary ---------------------------------------------------------------------------------

ALLOWED = {"modelrouter.actors.system", "modelrouter.actors.relay"}
ACTOR_INTERNALS = {"router", "providers", "health", "tasks", "pending", "state", "scheduler"}


def _web_modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(WEB.glob("*.py"))]


def test_web_imports_only_the_system_facade_and_the_relay_from_the_actor_side() -> None:
    found = []
    for path, tree in _web_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [
                (path.name, n)
                for n in names
                if n.startswith("modelrouter.actors") and n not in ALLOWED
            ]
    assert not found, f"web reaches past the facade: {found}"


def test_web_reads_no_attribute_of_the_actor_side_behind_the_facade() -> None:
    found = [
        (path.name, node.lineno, node.attr)
        for path, tree in _web_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ACTOR_INTERNALS
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "system"
    ]
    assert not found, f"web reads the system's insides: {found}"


# -- the control path: one hop to stop an attempt, one owner of a relay's end ----------------------
async def test_a_client_leaving_stops_its_attempt_with_its_routing_task(mock: Mock) -> None:
    """The attempt runs in the request's routing task: once that task has ended, the attempt
    has ended too, its ticket given back, with no further task or message to wait for."""
    system = await _system(mock, "tokens=50,token_delay=0.05")
    try:
        relay = _route(system, stream=True)
        events = await asyncio.wait_for(relay.take(), 5)
        while not any(type(e) is Chunk for e in events):
            events += await asyncio.wait_for(relay.take(), 5)
        groq = system.router.providers["groq"]
        assert groq.view().in_flight == 1
        (task,) = system.router.tasks
        relay.close()  # the client went away
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert groq.view().in_flight == 0, "the attempt ended with its routing task"
        assert groq.status() == "ok", "a client leaving says nothing about the provider"
    finally:
        await system.close()


def test_a_relay_has_one_end_and_says_so_when_ended_twice() -> None:
    from modelrouter.actors.relay import RelayFinished

    relay = Relay()
    relay.finish(Done())
    with pytest.raises(RelayFinished):
        relay.finish(Failed(502, "upstream_error", "late"))


def test_a_relay_runs_every_close_callback_it_was_given() -> None:
    relay = Relay()
    heard: list[str] = []
    relay.on_close(lambda: heard.append("cache"))
    relay.on_close(lambda: heard.append("router"))
    relay.close()
    assert heard == ["cache", "router"]
    relay.on_close(lambda: heard.append("late"))
    assert heard == ["cache", "router", "late"], "a callback given after the close runs at once"


async def test_admissions_to_one_provider_wait_on_the_rate_budget_together(mock: Mock) -> None:
    """The rate script is awaited outside the provider's step: while one request waits on the
    shared state (a Redis round trip), the next is admitted and waits beside it, instead of
    queueing behind it (one admission per round trip per provider)."""
    system = await _system(mock, GROQ_RATE_LIMIT="1000")
    state, original = system.state, system.state.acquire_rate
    waiting: list[str] = []
    everyone = asyncio.Event()

    async def slow_rate(key: str, per_minute: int) -> Any:
        waiting.append(key)
        if len(waiting) == 8:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 2)  # a round trip that needs the others
        return await original(key, per_minute)

    state.acquire_rate = slow_rate  # type: ignore[method-assign]
    try:
        relays = [_route(system) for _ in range(8)]
        answers = [await _drain(relay) for relay in relays]
        assert len(waiting) == 8
        assert all(type(events[-1]) is Done for events in answers)
    finally:
        await system.close()


async def test_a_queued_route_runs_in_its_own_callers_context(
    mock: Mock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route that waited for a routing slot is started when another request's task ends:
    it must run with its own request id (its log lines, its trace), not the one that ended."""
    from modelrouter.observability import CURRENT_REQUEST_ID

    system = await _system(mock, "first_delay=0.1")
    system.router.limit, system.router.pending_limit = 1, 1
    seen: list[str | None] = []
    answer = type(system.router)._answer

    async def noting(self: Any, route: Any) -> Any:
        seen.append(CURRENT_REQUEST_ID.get())
        return await answer(self, route)

    monkeypatch.setattr(type(system.router), "_answer", noting)
    try:
        CURRENT_REQUEST_ID.set("first")
        first = _route(system)
        CURRENT_REQUEST_ID.set("second")
        second = _route(system)  # queued: the one slot is taken
        await _drain(first)
        await _drain(second)
        assert seen == ["first", "second"]
    finally:
        await system.close()
