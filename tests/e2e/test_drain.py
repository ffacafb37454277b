"""A replica stopped behind nginx: what the balancer does with its requests.

SIGTERM: the replica answers /ready with 503 for DRAIN_SECONDS while it goes on serving, then
stops listening and closes its idle connections, and finishes what it has in flight. nginx
passes to the other replica every request that the stopping one refused or closed without
answering (deploy/nginx/modelrouter.conf, `proxy_next_upstream`), POSTs included, so no client
sees a failure, and none is done twice. A replica that dies with an answer under way is
another matter: nginx never repeats an answer that has started.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import aiohttp
import pytest

from tests.conftest import USER, Mock, parse_sse
from tests.e2e.conftest import StartStack
from tests.e2e.stack import MockProvider, Stack

pytestmark = pytest.mark.e2e
SLOW_SPEC = "token_delay=0.25,tokens=10"
SLOW = {"messages": USER["messages"], "provider": "openrouter", "fallback": False}
CLIENTS = 6


async def one(session: aiohttp.ClientSession, url: str, kind: str) -> str | None:
    """One request of the mixed traffic; None when it went well, else what went wrong."""
    try:
        if kind == "models":
            async with session.get(f"{url}/v1/models") as response:
                ok = response.status == 200 and (await response.json())["data"]
                return None if ok else f"models {response.status}"
        async with session.post(f"{url}/{kind}", json=USER) as response:
            body = await response.read()
            if response.status != 200:
                return f"{kind} {response.status} {body[:200]!r}"
            if kind == "stream" and parse_sse(body.decode())[-1] != ("message", "[DONE]"):
                return f"stream cut: {body[-200:]!r}"
            return None
    except aiohttp.ClientError as exc:
        return f"{kind} {exc!r}"


async def traffic(url: str, stop: asyncio.Event, outcomes: list[tuple[str, str | None]]) -> None:
    kinds = itertools.cycle(("chat", "stream", "models"))
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            kind = next(kinds)
            outcomes.append((kind, await one(session, url, kind)))


async def slow_stream(url: str, request_id: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/stream", json=SLOW, headers={"X-Request-ID": request_id}) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


async def wait_for_draining(fleet: Stack) -> None:
    """The stopping replica says 503 on /ready, and still answers."""
    stopping = fleet.replicas[0]
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{stopping.url}/ready") as response:
                if response.status == 503:
                    assert await response.json() == {"ready": False, "reason": "draining"}
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("/ready never said draining")
        async with session.get(f"{stopping.url}/health") as response:
            assert (response.status, (await response.json())["draining"]) == (200, True)


async def test_sigterm_drains_a_replica_while_nginx_serves_every_request_from_the_other(
    stack: StartStack, mock_provider: MockProvider
) -> None:
    fleet = stack(DRAIN_SECONDS="1", OPENROUTER_BASE_URL=mock_provider.base(SLOW_SPEC))
    stopping = fleet.replicas[0]
    # Streams under way when the signal comes: nginx alternates, two land on each replica.
    slow = [asyncio.create_task(slow_stream(fleet.url, f"slow-{n}")) for n in range(4)]
    stop, outcomes = asyncio.Event(), []
    clients = [asyncio.create_task(traffic(fleet.url, stop, outcomes)) for _ in range(CLIENTS)]
    await asyncio.sleep(0.5)
    stopping.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    await wait_for_draining(fleet)
    code = await asyncio.to_thread(stopping.proc.wait, 30)
    stopped_after = time.monotonic() - signalled
    during = len(outcomes)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    bodies = await asyncio.gather(*slow)

    failures = [(kind, error) for kind, error in outcomes if error is not None]
    resent = fleet.nginx.errors().count("while reading response header from upstream")
    print(
        f"{len(outcomes)} requests ({during} until the replica exited {stopped_after:.1f} s after"
        f" SIGTERM), {resent} passed to the other replica after a closed connection"
    )
    assert code == 0, stopping.output()
    assert failures == []
    assert len(outcomes) > during > 0
    for body in bodies:
        events = parse_sse(body.decode())
        assert len(events) == 11
        assert events[-1] == ("message", "[DONE]")
    served = dict(fleet.served(at_least=len(outcomes) + len(slow)))
    assert {served[f"slow-{n}"] for n in range(4)} == {"a", "b"}, "streams finished on both"
    last = [replica for rid, replica in served.items() if not rid.startswith("slow-")][-50:]
    assert all(replica.endswith("b") for replica in last), f"then only b: {last}"
    # No request was done twice: one upstream call for each answer the clients got.
    async with aiohttp.ClientSession() as session:
        mock = Mock(mock_provider.url, session)
        llm = sum(1 for kind, _ in outcomes if kind != "models")
        assert await mock.count() == llm
        assert await mock.count(SLOW_SPEC) == 4


async def test_an_answer_under_way_is_never_repeated_when_its_replica_dies(
    stack: StartStack, mock_provider: MockProvider
) -> None:
    fleet = stack(OPENROUTER_BASE_URL=mock_provider.base(SLOW_SPEC))
    received = b""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fleet.url}/stream", json=SLOW) as response:
            assert response.status == 200
            received += await response.content.readuntil(b"\n\n")
            serving = [r for r in fleet.replicas if await in_flight(session, r.url) == 1]
            assert len(serving) == 1
            serving[0].sigkill()
            with pytest.raises(aiohttp.ClientPayloadError):
                received += await response.content.read()
        assert b"[DONE]" not in received
        assert await Mock(mock_provider.url, session).count(SLOW_SPEC) == 1, "not sent again"
        # The next request goes to the replica that is left.
        async with session.post(f"{fleet.url}/chat", json=USER) as response:
            assert response.status == 200


async def in_flight(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/health") as response:
        return int((await response.json())["providers"]["openrouter"]["in_flight"])
