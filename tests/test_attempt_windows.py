"""What an attempt's timers measure: the provider, never the client, and data, not comments.

Each test runs one attempt of a real adapter and pool against a live upstream (the mock, or a
small server of its own), writing into a relay the test reads as a client would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from modelrouter.actors.messages import Attempt, AttemptResult
from modelrouter.actors.relay import Relay
from modelrouter.actors.upstream import Upstream, run_attempt
from modelrouter.events import Chunk
from modelrouter.schemas import ChatRequest
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hello there"}])  # type: ignore[list-item]


async def upstream_of(gateway: Gateway, **env: str) -> Upstream:
    client = await gateway(**env)
    return client.app[RUNTIME].system.router.providers["groq"].upstream  # type: ignore[no-any-return]


async def attempt(
    upstream: Upstream, relay: Relay, *, provider_timeout: float, first_chunk_timeout: float = 5.0
) -> AttemptResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    job = Attempt(REQUEST, "m", relay, True, deadline, "req-1")
    return await run_attempt(
        upstream,
        job,
        provider_timeout=provider_timeout,
        first_chunk_timeout=first_chunk_timeout,
        connect_timeout=5.0,
    )


async def test_a_slow_reader_is_not_a_stalled_provider(gateway: Gateway, mock: Mock) -> None:
    """The relay stays full far longer than PROVIDER_TIMEOUT while the client does not read:
    the provider is not blamed, and the answer arrives whole once the client reads again."""
    upstream = await upstream_of(gateway, **two_providers(mock, groq="tokens=400"))
    relay = Relay(maxsize=4)
    running = asyncio.create_task(
        attempt(upstream, relay, provider_timeout=0.3, first_chunk_timeout=1.0)
    )
    await asyncio.sleep(1.5)  # the client reads nothing for five provider windows
    assert not running.done(), "the attempt gave up while only the client was slow"
    texts: list[str] = []
    while not running.done():
        texts += [e.text for e in await relay.take() if isinstance(e, Chunk)]
        await asyncio.sleep(0)
    result = running.result()
    assert result.ok, result
    texts += [e.text for e in relay._events if isinstance(e, Chunk)]
    assert len(texts) == 400


async def test_a_slow_reader_blacklists_no_provider_through_the_gateway(
    gateway: Gateway, mock: Mock
) -> None:
    """The probe of the issue, in small: a stream the client pauses reading for longer than
    PROVIDER_TIMEOUT ends whole, and the provider stays healthy."""
    env = two_providers(
        mock, groq="tokens=20000", PROVIDER_TIMEOUT="0.5", FIRST_CHUNK_TIMEOUT="1.5"
    )
    client = await gateway(**env)
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    first = await response.content.read(64)
    await asyncio.sleep(2.5)  # the client pauses: every buffer on the way fills
    body = first + await response.content.read()
    events = parse_sse(body.decode())
    assert events[-1] == ("message", "[DONE]")
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok"


@pytest.fixture
async def pinging(aiohttp_client: Callable[..., Any]) -> str:
    """An OpenAI-style upstream that sends one token, then only `: ping` comments."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        await response.write(chunk)
        for _ in range(200):
            await asyncio.sleep(0.02)
            await response.write(b": ping\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return str(client.make_url("/v1"))


async def test_a_stream_of_comments_only_is_stalled(gateway: Gateway, pinging: str) -> None:
    upstream = await upstream_of(gateway, GROQ_API_KEY="k", GROQ_BASE_URL=pinging)
    relay = Relay(maxsize=64)
    result = await attempt(upstream, relay, provider_timeout=0.2)
    assert not result.ok
    assert result.reason == "timeout"
    assert "no data for 0.2s" in result.message
    assert result.emitted, "the token before the pings reached the client"


async def test_pings_do_not_stretch_the_first_chunk_window(gateway: Gateway) -> None:
    """Comments before the first token: the first-chunk window still runs out."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(200):
            await response.write(b": ping\n\n")
            await asyncio.sleep(0.02)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        upstream = await upstream_of(
            gateway, GROQ_API_KEY="k", GROQ_BASE_URL=f"http://127.0.0.1:{port}/v1"
        )
        result = await attempt(
            upstream, Relay(maxsize=64), provider_timeout=5.0, first_chunk_timeout=0.2
        )
    finally:
        await runner.cleanup()
    assert result.reason == "first_chunk_timeout"
    assert not result.emitted


async def test_a_slow_tls_handshake_is_a_connect_error_not_a_late_first_chunk(
    gateway: Gateway,
) -> None:
    """Connecting has its own window (CONNECT_TIMEOUT) and failure reason; the first chunk's
    window starts only once the request is written."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts TCP, never answers the TLS ClientHello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await gateway(
            PROVIDER_ORDER="groq",
            GROQ_API_KEY="k",
            GROQ_BASE_URL=f"https://127.0.0.1:{port}/v1",
            CONNECT_TIMEOUT="0.2",
            FIRST_CHUNK_TIMEOUT="0.1",
        )
        response = await client.post("/stream", json=USER)
        assert response.status == 502
        message = (await response.json())["error"]["message"]
        assert "connect_error" in message
        assert "TLS handshake" in message
        assert "first_chunk_timeout" not in message
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_provider_at_its_connection_cap_sends_the_next_request_elsewhere(
    gateway: Gateway, mock: Mock
) -> None:
    """<PROVIDER>_MAX_CONNECTIONS bounds a provider's connections: at the cap the attempt is
    `saturated` (no blame) and the next candidate answers."""
    env = two_providers(mock, groq="first_delay=0.3", GROQ_MAX_CONNECTIONS="1")
    client = await gateway(**env)
    first, second = await asyncio.gather(
        client.post("/chat", json=USER), client.post("/chat", json=USER)
    )
    providers = sorted([(await first.json())["provider"], (await second.json())["provider"]])
    assert providers == ["groq", "openrouter"]
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok"
