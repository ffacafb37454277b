"""The fault matrix, client side: a client that goes away before the first chunk, mid-stream,
or while the request falls over to the next provider. The gateway must close the upstream
call at once, count the request as 499, blame no provider, and hold nothing afterwards."""

from __future__ import annotations

import asyncio
import json
import socket

from tests.conftest import wait_until
from tests.faults.conftest import Gateways
from tests.faults.support import (
    CLIENT_KEY,
    USER,
    GatewayProcess,
    MockProcess,
    answered,
    fault_env,
    no_leaks,
)
from tests.scrape import Page


def open_stream(gateway: GatewayProcess) -> socket.socket:
    """A raw `/stream` request: the test closes the socket when it wants to leave."""
    body = json.dumps(USER).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(
        b"POST /stream HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


async def read_until(sock: socket.socket, count: int) -> bytes:
    """Read until `count` data lines arrived."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received = b""
    while received.count(b"\ndata: ") < count:
        received += await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
    return received


async def mock_streams(mock: MockProcess, count: int) -> None:
    async def check() -> bool:
        return bool((await mock.stats())["open_streams"] == count)

    await wait_until(check, timeout=8)


async def left(
    gateway: GatewayProcess, mock: MockProcess, sock: socket.socket, *, blamed: int = 0
) -> Page:
    """Close the client's socket: the upstream call must close at once, the request count as a
    499, no provider be blamed for it, and nothing stay behind."""
    sock.close()
    await mock_streams(mock, 0)
    page = await no_leaks(gateway, mock)
    assert answered(page, "/stream", 499) == 1
    assert page.total("modelrouter_provider_failures_total") == blamed
    return page


async def test_client_gone_before_the_first_chunk_closes_the_upstream_call(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = fault_env(mock, groq="first_delay=30", openrouter="tokens=7", FIRST_CHUNK_TIMEOUT="20")
    gateway = await gateways(env)
    sock = open_stream(gateway)
    await mock_streams(mock, 1)  # groq's call is open, waiting for its first token
    await left(gateway, mock, sock)  # closed with the client, not at FIRST_CHUNK_TIMEOUT
    assert await mock.count("tokens=7") == 0  # no fallback for a client that left
    assert (await gateway.health())["providers"]["groq"]["state"] == "ok"


async def test_client_gone_mid_stream_closes_the_upstream_call(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="token_delay=0.2,tokens=200"))
    sock = open_stream(gateway)
    await read_until(sock, 2)
    page = await left(gateway, mock, sock)
    assert page.value("modelrouter_active_streams") == 0
    assert (await gateway.health())["providers"]["groq"]["state"] == "ok"


async def test_client_gone_during_a_fallback_closes_the_second_call(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = fault_env(mock, groq="status=500", openrouter="first_delay=30", FIRST_CHUNK_TIMEOUT="20")
    gateway = await gateways(env)
    sock = open_stream(gateway)
    await mock_streams(mock, 1)  # groq failed; openrouter's call is open
    page = await left(gateway, mock, sock, blamed=1)  # groq's 500, not openrouter
    assert page.total("modelrouter_fallbacks_total", from_provider="groq") == 1
    assert page.total("modelrouter_provider_failures_total", provider="groq") == 1
