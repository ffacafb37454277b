"""Through nginx (deploy/nginx/modelrouter.conf) exactly as directly: bodies, streams, ids.

Groq answers long replies at once; OpenRouter answers slowly (a token every 0.25 s), for the
test that shows nginx does not hold a stream back.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import USER, parse_sse
from tests.e2e.stack import MockProvider, Stack

pytestmark = pytest.mark.e2e
TOKEN_DELAY = 0.25
SLOW_TOKENS = 8
LONG = {"messages": USER["messages"], "provider": "groq"}
SLOW = {"messages": USER["messages"], "provider": "openrouter", "fallback": False}


@pytest.fixture(scope="module")
def fleet(mock_provider: MockProvider) -> Iterator[Stack]:
    stack = Stack(
        mock_provider,
        GROQ_BASE_URL=mock_provider.base("tokens=60"),
        OPENROUTER_BASE_URL=mock_provider.base(f"token_delay={TOKEN_DELAY},tokens={SLOW_TOKENS}"),
    )
    yield stack
    stack.stop()


async def post(url: str, path: str, body: object, request_id: str) -> tuple[int, bytes, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}{path}", json=body, headers={"X-Request-ID": request_id}) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


async def test_answers_and_streams_are_the_same_through_nginx_as_direct(fleet: Stack) -> None:
    targets = [fleet.url, *(replica.url for replica in fleet.replicas)]
    for path in ("/chat", "/stream"):
        request_id = f"e2e-same-{path[1:]}"
        through, *direct = [await post(url, path, LONG, request_id) for url in targets]
        assert through[0] == 200, through[1][:300]
        assert [answer[1] for answer in direct] == [through[1]] * len(direct)
        assert through[2]["X-Request-ID"] == request_id
        assert through[2]["x-modelrouter-provider"] == "groq"
    events = parse_sse(through[1].decode())
    assert len(events) == 61, "60 chunks and [DONE], one SSE event each"
    assert events[-1] == ("message", "[DONE]")
    assert any("\n" in data for _, data in events), "a chunk with a line break stays one event"
    assert through[2]["Content-Type"].startswith("text/event-stream")
    # The OpenAI route's stream, event by event (only the `created` clock differs).
    body = {"model": "groq/auto", "messages": USER["messages"], "stream": True}
    path = "/v1/chat/completions"
    _, via, _ = await post(fleet.url, path, body, "e2e-openai")
    _, direct_body, _ = await post(fleet.replicas[0].url, path, body, "e2e-openai")
    assert _without_created(via) == _without_created(direct_body)
    assert {"a", "b"} <= set(fleet.served_by(at_least=3)), "nginx used both replicas"


def _without_created(body: bytes) -> list[object]:
    events = []
    for kind, data in parse_sse(body.decode()):
        value = data if data == "[DONE]" else json.loads(data)
        if isinstance(value, dict):
            value.pop("created", None)
        events.append((kind, value))
    assert len(events) > 3
    return events


async def test_a_stream_reaches_the_client_while_the_upstream_is_still_sending(
    fleet: Stack,
) -> None:
    arrivals: list[float] = []
    body = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fleet.url}/stream", json=SLOW) as response,
    ):
        assert response.status == 200
        async for line in response.content:
            body += line
            if line.startswith(b"data:"):
                arrivals.append(time.monotonic())
    assert len(parse_sse(body.decode())) == SLOW_TOKENS + 1  # the chunks and [DONE]
    # Buffered, every event would arrive at the end, together. Unbuffered, the first one is
    # here while the mock still has (SLOW_TOKENS - 1) delays to go.
    spread = arrivals[-1] - arrivals[0]
    print(f"first to last event through nginx: {spread:.2f} s")
    assert spread >= (SLOW_TOKENS - 1) * TOKEN_DELAY * 0.5


async def test_request_id_is_passed_through_or_generated_by_nginx(fleet: Stack) -> None:
    before = len(fleet.served())
    async with aiohttp.ClientSession() as session:
        headers = {"X-Request-ID": "client-chosen-id.42"}
        async with session.post(f"{fleet.url}/chat", json=USER, headers=headers) as response:
            assert response.headers["X-Request-ID"] == "client-chosen-id.42"
            assert (await response.json())["request_id"] == "client-chosen-id.42"
        async with session.post(f"{fleet.url}/chat", json=USER) as response:
            generated = response.headers["X-Request-ID"]
            assert (await response.json())["request_id"] == generated
    assert re.fullmatch(r"[0-9a-f]{32}", generated), "nginx's $request_id"
    logged = dict(fleet.served(at_least=before + 2))
    assert generated in logged, "one id in nginx's log and in the gateway's"


async def test_metrics_stay_inside_while_health_and_ready_pass(fleet: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/metrics?name[]=x", "//metrics", "/%6detrics"):
            async with session.get(f"{fleet.url}{path}") as response:
                assert response.status == 404, path
                assert "modelrouter_" not in await response.text()
        async with session.get(f"{fleet.replicas[0].url}/metrics") as response:
            assert response.status == 200
            assert "modelrouter_requests_total" in await response.text()
        async with session.get(f"{fleet.url}/health") as response:
            health = await response.json()
            assert (response.status, health["state_backend"]) == (200, "redis")
        async with session.get(f"{fleet.url}/ready") as response:
            assert (response.status, await response.json()) == (200, {"ready": True})
