"""A connection goes back to the pool only when its own response was parsed to its end with
nothing unread; every other ending closes it. One test per way to break that.

Each test checks two things: the request gets its own answer, and the next request (on whatever
connection the pool chooses) gets its own answer too, never a byte of the previous one.
"""

from __future__ import annotations

import asyncio

import pytest

from modelrouter.transport import BadResponse, ConnectionLost, Pool
from tests.transport.conftest import Serve
from tests.transport.servers import CLOSE, CONTINUE, EARLY_HINTS, ok


async def ask(pool: Pool) -> tuple[int, bytes]:
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.release()


def then_answers(first: list[bytes | float | None]):  # type: ignore[no-untyped-def]
    """Request 0 gets `first`; every later request n gets `answer n`."""
    return lambda n: first if n == 0 else [ok(f"answer {n}")]


async def test_an_answer_after_100_continue_never_reaches_the_next_request(serve: Serve) -> None:
    # The headline bug: the 100 was taken for the answer, and the 200 went to the next request.
    server = await serve(lambda n: [CONTINUE, 0.02, ok(f"answer {n}")])
    pool = Pool(server.url())
    assert [await ask(pool) for _ in range(3)] == [
        (200, b"answer 0"),
        (200, b"answer 1"),
        (200, b"answer 2"),
    ]
    assert server.connections == 1, "a 1xx does not spoil the connection"
    await pool.close()


async def test_several_interim_responses_are_all_skipped(serve: Serve) -> None:
    server = await serve(then_answers([CONTINUE, EARLY_HINTS, 0.01, CONTINUE, ok("answer 0")]))
    pool = Pool(server.url())
    assert [await ask(pool) for _ in range(2)] == [(200, b"answer 0"), (200, b"answer 1")]
    await pool.close()


async def test_a_protocol_switch_is_refused_and_the_connection_closed(serve: Serve) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    server = await serve(then_answers([switch, b"\x00\x00\x12\x04"]))
    pool = Pool(server.url())
    with pytest.raises(BadResponse, match="101"):
        await ask(pool)
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_bytes_after_the_body_close_the_connection(serve: Serve) -> None:
    server = await serve(then_answers([ok("answer 0") + b"JUNK"]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_a_second_response_after_the_body_reaches_nobody(serve: Serve) -> None:
    server = await serve(then_answers([ok("answer 0") + ok("stray")]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_a_response_arriving_while_the_connection_is_idle_reaches_nobody(
    serve: Serve,
) -> None:
    # HTTP/1.1 has no request ids: a stray answer that lands after the next request was sent
    # cannot be told from the real one (aiohttp is in the same position). Landing while the
    # connection waits in the pool, it must spoil the connection.
    server = await serve(then_answers([ok("answer 0"), 0.01, ok("stray")]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    await asyncio.sleep(0.1)
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_releasing_before_the_end_closes_the_connection(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"
    server = await serve(then_answers([head, 0.05, b"answer 0"]))
    pool = Pool(server.url())
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    response.release()  # the body is still owed: it would reach the next request
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_an_error_body_still_arriving_when_released_closes_the_connection(
    serve: Serve,
) -> None:
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5000\r\n\r\n"
    server = await serve(then_answers([head, b"x" * 1000, 0.05, b"x" * 4000]))
    pool = Pool(server.url())
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    assert await response.read(100) == b"x" * 100  # as the attempt reads an error's message
    response.release()
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_an_error_body_read_to_its_end_keeps_the_connection(serve: Serve) -> None:
    server = await serve(then_answers([ok("busy", status="503 Service Unavailable")]))
    pool = Pool(server.url())
    assert await ask(pool) == (503, b"busy")
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 1
    await pool.close()


async def test_connection_close_from_the_server_is_honoured(serve: Serve) -> None:
    server = await serve(then_answers([ok("answer 0", "Connection: close")]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_a_body_delimited_by_the_close_is_read_whole_and_not_reused(serve: Serve) -> None:
    server = await serve(then_answers([b"HTTP/1.0 200 OK\r\n\r\nanswer", 0.01, b" 0", CLOSE]))
    pool = Pool(server.url())
    assert await ask(pool) == (200, b"answer 0")
    assert await ask(pool) == (200, b"answer 1")
    await pool.close()


async def test_a_cut_body_closes_the_connection(serve: Serve) -> None:
    server = await serve(then_answers([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nans", CLOSE]))
    pool = Pool(server.url())
    with pytest.raises(ConnectionLost):
        await ask(pool)
    assert await ask(pool) == (200, b"answer 1")
    await pool.close()


async def test_a_body_over_the_bound_closes_the_connection(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n"
    server = await serve(then_answers([head, b"y" * 4096, 0.05, b"y" * 4096]))
    pool = Pool(server.url(), max_body=1024)
    with pytest.raises(BadResponse, match="larger than 1024"):
        await ask(pool)
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_a_reader_cancelled_mid_body_closes_the_connection(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    server = await serve(then_answers([head, b"answ", 0.5, b"er 0!!"]))
    pool = Pool(server.url())

    async def read_and_release() -> bytes:
        response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
        try:
            return await response.read()
        finally:
            response.release()

    task = asyncio.ensure_future(read_and_release())
    await asyncio.sleep(0.1)
    task.cancel()  # as a client disconnect cancels the attempt
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ask(pool) == (200, b"answer 1")
    assert server.connections == 2
    await pool.close()


async def test_a_malformed_response_closes_the_connection(serve: Serve) -> None:
    server = await serve(then_answers([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"]))
    pool = Pool(server.url())
    with pytest.raises(BadResponse, match="malformed"):
        await ask(pool)
    assert await ask(pool) == (200, b"answer 1")
    await pool.close()


async def test_an_endless_head_is_cut_at_the_bound(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (2 * 1024 * 1024)
    server = await serve(then_answers([head, 1.0]))
    pool = Pool(server.url())
    with pytest.raises(BadResponse, match="head larger"):
        await ask(pool)
    assert await ask(pool) == (200, b"answer 1")
    await pool.close()
