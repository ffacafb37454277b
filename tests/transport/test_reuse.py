"""A connection goes back to the pool only when its own response was parsed to its end with
nothing unread; every other ending closes it. One test per way to break that."""

from __future__ import annotations

from modelrouter.transport import Pool
from tests.transport.conftest import Serve
from tests.transport.servers import CONTINUE, ok


async def ask(pool: Pool) -> tuple[int, bytes]:
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_an_answer_after_100_continue_never_reaches_the_next_request(serve: Serve) -> None:
    server = await serve(lambda n: [CONTINUE, 0.02, ok(f"answer {n}")])
    pool = Pool(server.url())
    assert [await ask(pool) for _ in range(3)] == [
        (200, b"answer 0"),
        (200, b"answer 1"),
        (200, b"answer 2"),
    ]
    await pool.close()
