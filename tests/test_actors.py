"""The actor runtime: mailboxes, ask/tell failure rules, supervision, and the relay's bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelrouter.actors.base import Actor, ActorStopped, MailboxFull
from modelrouter.actors.health import backoff_delay
from modelrouter.actors.relay import ClientGone, Relay
from modelrouter.actors.supervisor import Supervisor
from modelrouter.events import Chunk, Done
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, two_providers, wait_until


class Counter(Actor[Any]):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("counter", **kwargs)
        self.value = 0
        self.starts = 0
        self.gate: asyncio.Event | None = None

    async def on_start(self) -> None:
        self.starts += 1

    async def handle(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "where":
            return asyncio.current_task()
        if message == "wait" and self.gate is not None:
            await self.gate.wait()
        self.value += 1
        return self.value


async def test_ask_returns_the_result_and_an_error_goes_back_to_the_asker() -> None:
    actor = Counter()
    actor.start()
    assert await actor.ask("inc") == 1
    with pytest.raises(RuntimeError, match="boom"):
        await actor.ask("boom")
    assert await actor.ask("inc") == 2, "the actor keeps running after an ask fails"
    assert actor.starts == 1
    await actor.stop()


async def test_an_error_in_a_tell_crashes_the_actor_into_its_supervisor() -> None:
    restarted: list[str] = []
    supervisor = Supervisor(
        max_restarts=3, within=60, on_restart=lambda a: restarted.append(a.name)
    )
    actor = Counter()
    supervisor.watch(actor)
    actor.start()
    actor.tell("boom")
    actor.tell("inc")
    await wait_until(lambda: _async(actor.value == 1))
    assert restarted == ["counter"]
    assert actor.starts == 2, "state reloaded on restart"
    assert actor.restarts == 1
    await actor.stop()


async def test_supervisor_gives_up_after_too_many_restarts() -> None:
    given_up: list[str] = []
    supervisor = Supervisor(max_restarts=2, within=60, on_give_up=lambda a: given_up.append(a.name))
    actor = Counter()
    supervisor.watch(actor)
    actor.start()
    for _ in range(3):
        actor.tell("boom")
        await asyncio.sleep(0.01)
    assert given_up == ["counter"]
    assert not actor.running
    await actor.stop()


async def test_full_mailbox_rejects_at_once() -> None:
    actor = Counter(mailbox_size=2)
    actor.gate = asyncio.Event()
    actor.start()
    first = asyncio.create_task(actor.ask("wait"))
    await asyncio.sleep(0.01)  # the actor is now blocked inside "wait"
    actor.tell("inc")
    actor.tell("inc")
    with pytest.raises(MailboxFull):
        actor.tell("inc")
    with pytest.raises(MailboxFull):
        await actor.ask("inc")
    actor.gate.set()
    assert await first == 1
    await actor.stop()


async def test_stop_fails_pending_asks_and_refuses_new_messages() -> None:
    actor = Counter()
    actor.gate = asyncio.Event()
    actor.start()
    blocked = asyncio.create_task(actor.ask("wait"))
    await asyncio.sleep(0.01)
    pending = asyncio.create_task(actor.ask("inc"))
    await asyncio.sleep(0.01)
    await actor.stop()
    with pytest.raises(ActorStopped):
        await pending
    with pytest.raises(ActorStopped):
        actor.tell("inc")
    blocked.cancel()


async def test_ask_times_out_and_the_late_message_is_skipped() -> None:
    actor = Counter()
    actor.gate = asyncio.Event()
    actor.start()
    blocked = asyncio.create_task(actor.ask("wait"))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await actor.ask("inc", timeout=0.05)
    actor.gate.set()
    await blocked
    assert await actor.ask("inc") == 2, "the timed-out ask was not handled"
    await actor.stop()


async def test_an_idle_actor_answers_in_the_askers_task_and_others_wait_their_turn() -> None:
    actor = Counter()
    actor.gate = asyncio.Event()
    actor.start()
    await asyncio.sleep(0)  # the loop is parked on its empty mailbox
    assert await actor.ask("where") is asyncio.current_task(), "no hop through the loop"
    first = asyncio.create_task(actor.ask("wait"))
    await asyncio.sleep(0.01)  # handled in `first`'s task, suspended inside "wait"
    second = asyncio.create_task(actor.ask("inc"))
    await asyncio.sleep(0)  # `second` is queued first
    actor.tell("inc")
    await asyncio.sleep(0.01)
    assert actor.value == 0, "nothing overtakes the message being handled"
    assert not second.done()
    actor.gate.set()
    assert await first == 1
    assert await second == 2, "the queued ask is handled next, by the actor's loop"
    await wait_until(lambda: _async(actor.value == 3))
    assert actor.mailbox_depth == 0
    await actor.stop()


async def test_an_ask_to_a_busy_actor_goes_through_its_mailbox() -> None:
    actor = Counter()
    actor.gate = asyncio.Event()
    actor.start()
    actor.tell("wait")  # the loop itself is now blocked inside "wait"
    await asyncio.sleep(0.01)
    where = asyncio.create_task(actor.ask("where"))
    await asyncio.sleep(0.01)
    assert not where.done()
    actor.gate.set()
    assert await where is actor._task, "answered by the actor's own loop"
    await actor.stop()


async def test_relay_pushes_back_on_the_writer_when_full() -> None:
    relay = Relay(maxsize=2)
    await relay.put(Chunk("a"))
    await relay.put(Chunk("b"))
    writer = asyncio.create_task(relay.put(Chunk("c")))
    await asyncio.sleep(0.01)
    assert not writer.done(), "a full relay makes the writer wait"
    assert [e.text for e in await relay.take()] == ["a", "b"]  # type: ignore[union-attr]
    await writer
    relay.finish(Done())
    assert await relay.take() == [Chunk("c"), Done()]


async def test_relay_close_wakes_the_writer_and_cancels_its_owner() -> None:
    relay = Relay(maxsize=1)
    cancelled: list[bool] = []
    relay.on_close(lambda: cancelled.append(True))
    await relay.put(Chunk("a"))
    writer = asyncio.create_task(relay.put(Chunk("b")))
    await asyncio.sleep(0.01)
    relay.close()
    from modelrouter.actors.relay import ClientGone

    with pytest.raises(ClientGone):
        await writer
    assert cancelled == [True]


@pytest.mark.parametrize(
    ("failures", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (100, 300.0)]
)
def test_backoff_doubles_up_to_the_maximum(failures: int, expected: float) -> None:
    delay = backoff_delay(failures, base=5, maximum=300, rand=lambda a, b: 1.0)
    assert delay == expected


def test_backoff_jitter_stays_within_ten_percent_and_under_the_maximum() -> None:
    low = backoff_delay(2, base=5, maximum=300, rand=lambda a, b: a)
    high = backoff_delay(7, base=5, maximum=300, rand=lambda a, b: b)
    assert low == pytest.approx(9.0)
    assert high == 300.0


def test_auth_errors_wait_the_maximum_and_retry_after_wins_when_longer() -> None:
    assert backoff_delay(1, base=5, maximum=300, auth_error=True) == 300.0
    assert backoff_delay(1, base=5, maximum=300, retry_after=42, rand=lambda a, b: 1) == 42
    assert backoff_delay(3, base=5, maximum=300, retry_after=1, rand=lambda a, b: 1) == 20


async def test_crashed_provider_actor_is_restarted_and_keeps_serving(
    gateway: Gateway, mock: Mock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await gateway(**two_providers(mock))
    groq = client.app[RUNTIME].system.router.providers["groq"]
    original = type(groq)._finish
    calls = {"n": 0}

    def crash_once(self: Any, ticket: Any, result: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug in outcome handling")
        original(self, ticket, result)

    monkeypatch.setattr(type(groq), "_finish", crash_once)
    for _ in range(3):
        response = await client.post("/chat", json=USER)
        assert response.status == 200
    assert groq.restarts == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'modelrouter_actor_restarts_total{actor="groq"} 1.0' in metrics


async def test_provider_given_up_by_its_supervisor_is_down_and_ready_says_so(
    gateway: Gateway, mock: Mock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await gateway(PROVIDER_ORDER="ollama", OLLAMA_BASE_URL=mock.url)
    ollama = client.app[RUNTIME].system.router.providers["ollama"]

    def always_crash(self: Any, ticket: Any, result: Any) -> None:
        raise RuntimeError("persistent bug")

    monkeypatch.setattr(type(ollama), "_finish", always_crash)
    for _ in range(8):
        await client.post("/chat", json=USER)
        if ollama.down:
            break
    assert ollama.down
    response = await client.get("/ready")
    assert response.status == 503
    health = await (await client.get("/health")).json()
    assert health["providers"]["ollama"]["state"] == "down"
    response = await client.post("/chat", json=USER)
    assert response.status == 503
    assert "ollama: down" in (await response.json())["error"]["message"]


async def _async(value: bool) -> bool:
    return value


async def test_a_bug_in_planning_answers_the_client_at_once(
    gateway: Gateway, mock: Mock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelrouter.routing import Planner

    def broken_plan(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(Planner, "plan", broken_plan)
    client = await gateway(**two_providers(mock))
    response = await client.post("/chat", json=USER)
    assert response.status == 502
    assert (await response.json())["error"]["type"] == "internal_error"


async def test_a_whole_answer_reader_wakes_at_the_end_or_when_the_relay_is_full() -> None:
    relay = Relay(maxsize=3, eager=False)
    reader = asyncio.create_task(relay.take())
    await asyncio.sleep(0.01)  # the reader is waiting
    await relay.put(Chunk("a"))
    await asyncio.sleep(0.01)
    assert not reader.done(), "no wake-up per chunk"
    relay.finish(Done())
    assert await reader == [Chunk("a"), Done()]
    full = Relay(maxsize=2, eager=False)
    reader = asyncio.create_task(full.take())
    await asyncio.sleep(0.01)
    await full.put(Chunk("a"))
    await full.put(Chunk("b"))  # full: the reader must drain, or the writer would wait forever
    assert await reader == [Chunk("a"), Chunk("b")]


async def test_a_request_in_flight_when_the_router_closes_is_answered(
    gateway: Gateway, mock: Mock
) -> None:
    """The whole-answer reader has no timer of its own: the routing job ends its relay however
    it ends, here cancelled by the router closing."""
    client = await gateway(**two_providers(mock, groq="first_delay=5"))
    router = client.app[RUNTIME].system.router
    pending = asyncio.create_task(client.post("/chat", json=USER))
    await wait_until(lambda: _async(router.providers["groq"].view().in_flight == 1))
    await router.close()
    response = await asyncio.wait_for(pending, 2)
    assert response.status == 503
    assert (await response.json())["error"]["message"] == "the router stopped before answering"


async def test_offer_queues_at_once_until_the_relay_is_full() -> None:
    relay = Relay(maxsize=2, eager=False)
    assert relay.offer(Chunk("a"))
    assert relay.offer(Chunk("b"))
    assert not relay.offer(Chunk("c")), "full: the writer must await put()"
    assert [e.text for e in await relay.take()] == ["a", "b"]  # type: ignore[union-attr]
    relay.close()
    with pytest.raises(ClientGone):
        relay.offer(Chunk("d"))
