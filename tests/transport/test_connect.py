"""Opening a connection has its own timeout (CONNECT_TIMEOUT): TCP connect, proxy CONNECT and TLS
handshake together. Its expiry is a ConnectTimeout (an OSError, so a `connect_error`; never a
TimeoutError, which reads as a slow answer) naming the phase and no secret. The timer exists only
while connecting: waiting for the answer is the first-chunk timer's business, not this one's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from modelrouter.config import load_settings
from modelrouter.transport import ConnectTimeout, Pool, Proxy, open_pool
from tests.transport.conftest import Serve
from tests.transport.servers import ok


@pytest.fixture
async def unanswered_port() -> AsyncIterator[int]:
    """A port whose TCP handshake never completes: a listener that accepts nothing, its
    backlog filled by one connection, so that the kernel drops every further SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    _, filler = await asyncio.open_connection("127.0.0.1", port)
    yield port
    filler.close()
    listener.close()


async def ask(pool: Pool) -> tuple[int, bytes]:
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_a_tcp_connect_past_the_timeout_is_a_connect_timeout(unanswered_port: int) -> None:
    pool = Pool(f"http://127.0.0.1:{unanswered_port}", connect_timeout=0.2)
    with pytest.raises(ConnectTimeout) as caught:
        await ask(pool)
    assert str(caught.value) == (
        f"connect to 127.0.0.1:{unanswered_port} timed out after 0.2s (TCP connect)"
    )
    assert isinstance(caught.value, OSError)
    assert not isinstance(caught.value, TimeoutError), "a TimeoutError reads as a slow answer"
    assert pool.active == 0, "the failed connect gave its place back"
    await pool.close()


async def test_a_tls_handshake_past_the_timeout_names_the_phase_and_no_secret(
    serve: Serve,
) -> None:
    # A plain server never answers the ClientHello: TCP is up, TLS never completes.
    server = await serve(lambda n: [ok("never")])
    pool = Pool(f"https://bob:hunter2@127.0.0.1:{server.port}/v1", connect_timeout=0.2)
    with pytest.raises(ConnectTimeout) as caught:
        await ask(pool)
    message = str(caught.value)
    assert message == f"connect to 127.0.0.1:{server.port} timed out after 0.2s (TLS handshake)"
    assert "hunter2" not in message
    assert pool.active == 0
    await pool.close()


async def test_a_proxy_that_never_answers_connect_is_a_connect_timeout(serve: Serve) -> None:
    proxy_server = await serve(lambda n: [60.0])  # reads CONNECT, then says nothing
    proxy = Proxy(f"http://alice:s3cret@127.0.0.1:{proxy_server.port}")
    pool = Pool("https://api.example.com/v1", proxy=proxy, connect_timeout=0.2)
    with pytest.raises(ConnectTimeout) as caught:
        await ask(pool)
    message = str(caught.value)
    assert message == (
        "connect to api.example.com:443 timed out after 0.2s "
        f"(CONNECT through proxy 127.0.0.1:{proxy_server.port})"
    )
    assert "s3cret" not in message
    assert proxy_server.received[0].request_line == "CONNECT api.example.com:443 HTTP/1.1"
    await pool.close()


async def test_a_slow_answer_is_not_cut_by_the_connect_timeout(serve: Serve) -> None:
    server = await serve(lambda n: [0.4, ok(f"answer {n}")])
    pool = Pool(server.url(), connect_timeout=0.1)
    assert await ask(pool) == (200, b"answer 0")
    await pool.close()


async def test_checkout_takes_its_own_connect_timeout(unanswered_port: int) -> None:
    pool = Pool(f"http://127.0.0.1:{unanswered_port}")  # the default: 5 s
    with pytest.raises(ConnectTimeout, match=r"after 0\.1s \(TCP connect\)"):
        await pool.checkout(connect_timeout=0.1)
    await pool.close()


async def test_a_callers_own_deadline_during_connect_stays_a_cancellation(
    unanswered_port: int,
) -> None:
    # The attempt's deadline is the caller's to report: it must not come out as a connect
    # failure that blacklists the provider.
    pool = Pool(f"http://127.0.0.1:{unanswered_port}", connect_timeout=30.0)
    task = asyncio.ensure_future(pool.checkout())
    await asyncio.sleep(0)  # let the connect start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.active == 0
    await pool.close()


def test_connect_timeout_is_a_setting_passed_to_every_pool() -> None:
    assert load_settings({}).connect_timeout == 5.0
    settings = load_settings({"CONNECT_TIMEOUT": "1.5", "OLLAMA_MAX_CONNECTIONS": "7"})
    ollama = settings.provider("ollama")
    assert ollama is not None
    assert ollama.max_connections == 7
    pool = open_pool(ollama, settings, url=ollama.base_url + "/api/chat")
    assert (pool.connect_timeout, pool.max_connections) == (1.5, 7)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "soon"])
def test_a_malformed_connect_timeout_is_a_listed_problem(value: str) -> None:
    from modelrouter.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings({"CONNECT_TIMEOUT": value, "OLLAMA_MAX_CONNECTIONS": "0"})
    problems = caught.value.problems
    assert any(p.startswith(f"CONNECT_TIMEOUT={value!r} is not") for p in problems)
    assert any(p.startswith("OLLAMA_MAX_CONNECTIONS='0' is not") for p in problems)
