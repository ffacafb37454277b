"""A pool that knows its connections: it counts the active ones (checked out, or opening), closes
idle ones past `idle_timeout` wherever they sit in the idle list, and holds at most
`max_connections` (active and idle together): at the cap, with none idle, `checkout` raises
PoolFull at once, so the attempt can go to the next deployment instead of queueing.
"""

from __future__ import annotations

import asyncio

import pytest

from modelrouter.transport import Connection, ConnectionLost, Pool, PoolFull, Response
from tests.conftest import free_port
from tests.transport.conftest import Serve
from tests.transport.servers import CLOSE, ok


async def send(pool: Pool, conn: Connection) -> Response:
    return await pool.exchange(conn, pool.header_block("POST", "/x", {}), b"{}")


async def answer(pool: Pool, conn: Connection) -> bytes:
    response = await send(pool, conn)
    try:
        return await response.read()
    finally:
        response.release()


async def test_the_pool_counts_its_active_and_idle_connections(serve: Serve) -> None:
    server = await serve(lambda n: [ok(f"answer {n}")])
    pool = Pool(server.url())
    first, second = await pool.checkout(), await pool.checkout()
    assert (pool.active, pool.idle) == (2, 0)
    assert await answer(pool, first) == b"answer 0"
    assert (pool.active, pool.idle) == (1, 1)
    response = await send(pool, second)
    assert pool.active == 1, "a connection serving a response stays active until released"
    await response.read()
    response.release()
    response.release()  # twice: harmless
    assert (pool.active, pool.idle) == (0, 2)
    await pool.close()


async def test_at_the_cap_checkout_fails_at_once_and_an_idle_connection_is_reused(
    serve: Serve,
) -> None:
    server = await serve(lambda n: [ok(f"answer {n}")])
    pool = Pool(server.url(), max_connections=2)
    first, second = await pool.checkout(), await pool.checkout()
    assert pool.saturated
    with pytest.raises(PoolFull, match=f"127.0.0.1:{server.port}: all 2 connections in use"):
        await pool.checkout()
    assert await answer(pool, first) == b"answer 0"
    assert not pool.saturated
    third = await pool.checkout()
    assert third is first, "the idle connection is reused, no new one opened"
    pool.give_back(second)  # unused: closed, its place freed
    pool.give_back(third)
    assert (pool.active, server.connections) == (0, 2)
    await pool.close()


async def test_a_connection_being_opened_counts_against_the_cap(serve: Serve) -> None:
    server = await serve(lambda n: [ok("never")])  # a plain server: TLS never completes
    pool = Pool(f"https://127.0.0.1:{server.port}", max_connections=1)
    opening = asyncio.ensure_future(pool.checkout())
    await asyncio.sleep(0)  # the checkout runs up to its first wait: the connect
    assert pool.saturated
    with pytest.raises(PoolFull):
        await pool.checkout()
    opening.cancel()  # the attempt's deadline, or the client gone
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert (pool.active, pool.saturated) == (0, False)
    await pool.close()


async def test_failed_connects_and_exchanges_give_their_place_back(serve: Serve) -> None:
    refused = Pool(f"http://127.0.0.1:{free_port()}", max_connections=1)
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            await refused.checkout()
    assert refused.active == 0
    server = await serve(lambda n: [CLOSE])
    pool = Pool(server.url(), max_connections=1)
    for _ in range(2):
        with pytest.raises(ConnectionLost):
            await send(pool, await pool.checkout())
    assert (pool.active, pool.idle) == (0, 0)
    await pool.close()


async def test_a_request_cancelled_while_waiting_for_its_answer_gives_its_place_back(
    serve: Serve,
) -> None:
    server = await serve(lambda n: [30.0])
    pool = Pool(server.url(), max_connections=1)
    waiting = asyncio.ensure_future(send(pool, await pool.checkout()))
    await asyncio.sleep(0)  # the request is written; the exchange waits for the status line
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (pool.active, pool.idle) == (0, 0)
    await pool.close()


async def test_an_expired_idle_connection_is_closed_even_below_a_busy_one(serve: Serve) -> None:
    # LIFO reuse keeps serving from the top; the connection at the bottom is never popped, so a
    # check made only when popping would keep its socket open for ever.
    server = await serve(lambda n: [ok(f"answer {n}")])
    pool = Pool(server.url(), idle_timeout=0.3)
    bottom, top = await pool.checkout(), await pool.checkout()
    await answer(pool, bottom)
    await answer(pool, top)
    bottom_ended = asyncio.ensure_future(server.ended(1))
    for _ in range(500):  # busy on the top connection, until the bottom one is closed
        conn = await pool.checkout()
        assert conn is top, "the top connection serves every request"
        await answer(pool, conn)
        await asyncio.wait([bottom_ended], timeout=0.02)
        if bottom_ended.done():
            break
    assert bottom_ended.done(), "the expired idle connection was never closed"
    assert bottom.transport is None
    assert (pool.idle, server.connections) == (1, 2)
    await pool.close()


async def test_idle_connections_are_closed_when_they_expire_without_traffic(
    serve: Serve,
) -> None:
    server = await serve(lambda n: [ok(f"answer {n}")])
    pool = Pool(server.url(), idle_timeout=0.2)
    conns = [await pool.checkout() for _ in range(3)]
    for conn in conns:
        await answer(pool, conn)
    assert pool.idle == 3
    await asyncio.wait_for(asyncio.gather(*(server.ended(n) for n in (1, 2, 3))), timeout=10)
    assert pool.idle == 0
    await pool.close()


async def test_closing_the_pool_stops_its_sweep(serve: Serve) -> None:
    server = await serve(lambda n: [ok(f"answer {n}")])
    pool = Pool(server.url(), idle_timeout=60.0)
    await answer(pool, await pool.checkout())
    assert pool._sweep is not None
    await pool.close()
    assert (pool._sweep, pool.idle) == (None, 0)
    await asyncio.wait_for(server.ended(1), timeout=10)


@pytest.mark.parametrize(
    "bounds",
    [{"max_connections": 0}, {"connect_timeout": 0.0}, {"idle_timeout": 0.0}],
)
def test_pool_bounds_must_be_positive(bounds: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pool("http://h", **bounds)  # type: ignore[arg-type]
