"""A paid request is never sent twice. The one resend is the keep-alive race: a kept-alive
connection that the server closed, without a byte of answer, within `race_window` (250 ms) of
the write, so that the request cannot have been read. Any other loss is raised (the attempt
fails as `connect_error`), because the upstream may already be doing, and billing, the work.
"""

from __future__ import annotations

import pytest

from modelrouter.transport import ConnectionLost, Pool
from tests.transport.conftest import Serve
from tests.transport.servers import CLOSE, Action, ok


async def ask(pool: Pool) -> tuple[int, bytes]:
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.release()


def second_request_gets(actions: list[Action]):  # type: ignore[no-untyped-def]
    """Request 1 (the first on a kept-alive connection) gets `actions`; the others an answer."""
    return lambda n: actions if n == 1 else [ok(f"answer {n}")]


async def test_a_reused_connection_lost_after_the_race_window_is_never_resent(
    serve: Serve,
) -> None:
    # The server read the request, worked on it for 0.4 s (a completion under way), then the
    # connection dropped: resending would run, and bill, the completion twice.
    server = await serve(second_request_gets([0.4, CLOSE]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    with pytest.raises(ConnectionLost):
        await ask(pool)
    assert len(server.received) == 2, "the lost request reached the server once"
    assert server.connections == 1, "no new connection was opened for a resend"
    assert (pool.active, pool.idle) == (0, 0)
    assert await ask(pool) == (200, b"answer 2"), "the pool serves on"
    await pool.close()


async def test_the_keep_alive_race_is_resent_once_on_a_new_connection(serve: Serve) -> None:
    # Closed at once, no byte of answer: the server dropped an idle connection as the request
    # crossed it, and never read it. Failing here would blacklist a healthy provider.
    server = await serve(second_request_gets([CLOSE]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 2")
    assert [r.connection for r in server.received] == [1, 1, 2]
    assert (pool.active, pool.idle) == (0, 1)
    await pool.close()


async def test_the_race_window_is_a_keyword_of_the_pool(serve: Serve) -> None:
    server = await serve(second_request_gets([0.4, CLOSE]))
    pool = Pool(server.url(), race_window=30.0)  # a window that covers the 0.4 s
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 2")
    await pool.close()


async def test_the_race_is_resent_only_once(serve: Serve) -> None:
    server = await serve(lambda n: [ok("answer 0")] if n == 0 else [CLOSE])
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    with pytest.raises(ConnectionLost):
        await ask(pool)
    assert len(server.received) == 3, "the first send and one resend, on a new connection"
    assert pool.active == 0
    await pool.close()


async def test_a_new_connection_lost_before_the_answer_is_never_resent(serve: Serve) -> None:
    server = await serve(lambda n: [CLOSE] if n == 0 else [ok(f"answer {n}")])
    pool = Pool(server.url())
    with pytest.raises(ConnectionLost):
        await ask(pool)
    assert len(server.received) == 1
    await pool.close()


async def test_a_reused_connection_lost_after_a_byte_of_answer_is_never_resent(
    serve: Serve,
) -> None:
    server = await serve(second_request_gets([b"HTTP/1.1 200", CLOSE]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    with pytest.raises(ConnectionLost):
        await ask(pool)
    assert len(server.received) == 2
    await pool.close()
