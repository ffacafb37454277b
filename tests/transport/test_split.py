"""A response cut anywhere parses the same: at every byte boundary (fed straight to the
protocol), and at random sets of boundaries over real sockets, for both clients (hypothesis)."""

from __future__ import annotations

import gzip
import itertools

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrouter.transport.connection import Connection
from tests.transport.clients import CLIENTS, Outcome, answer
from tests.transport.servers import CONTINUE, EARLY_HINTS, ScriptedServer, ok

TEXT = b'{"choices": [{"message": {"content": "split anywhere"}}]}'
PACKED = gzip.compress(TEXT)
GZIP_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (PACKED[:20], PACKED[20:]))
    + b"0\r\nX-Trailer: yes\r\n\r\n"
)
MESSAGES = {
    "interim responses, then a gzip chunked body with trailers": CONTINUE
    + EARLY_HINTS
    + GZIP_CHUNKED,
    "a plain body with a length": ok(TEXT, "X-Request-ID: abc"),
}


class _Transport:
    """Just enough of a transport to feed the protocol by hand."""

    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def parse(pieces: list[bytes]) -> tuple[int, bytes, bool]:
    conn = Connection()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    for piece in pieces:
        conn.data_received(piece)
    await conn.headers()
    body = b""
    while (piece := await conn.next_body()) is not None:
        body += piece
    return conn.status, body, conn.reusable


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_a_cut_at_any_byte_parses_the_same(name: str) -> None:
    message = MESSAGES[name]
    whole = await parse([message])
    assert whole[0] == 200
    assert whole[2], "a complete keep-alive response is reusable"
    for cut in range(1, len(message)):
        assert await parse([message[:cut], message[cut:]]) == whole, cut
    assert await parse([message[i : i + 1] for i in range(len(message))]) == whole


def _pieces(message: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(message)]
    return [message[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def _over_sockets(kind: str, pieces: list[bytes]) -> tuple[Outcome, Outcome]:
    def script(n: int) -> list[bytes | float | None]:
        if n:
            return [ok(f"answer {n}")]
        spaced: list[bytes | float | None] = []
        for piece in pieces:
            spaced += [piece, 0.001]  # each piece its own read on the client's side
        return spaced

    server = await ScriptedServer(script).start()
    try:
        async with CLIENTS[kind]() as client:
            first = await client.post(server.url(path="/x"))
            second = await client.post(server.url(path="/x"))
    finally:
        await server.close()
    return first, second


SPLIT_ME = MESSAGES["interim responses, then a gzip chunked body with trailers"]


@pytest.mark.parametrize("kind", list(CLIENTS))
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(SPLIT_ME) - 1), max_size=12))
def test_a_response_cut_at_random_boundaries_reaches_both_clients_whole(
    kind: str, cuts: list[int]
) -> None:
    first, second = uvloop.run(_over_sockets(kind, _pieces(SPLIT_ME, cuts)))
    assert first == answer(200, TEXT)
    assert second == answer(200, "answer 1")


def test_the_pieces_cover_the_message_exactly() -> None:
    assert b"".join(_pieces(SPLIT_ME, [5, 5, 90, 1])) == SPLIT_ME
    assert len(_pieces(SPLIT_ME, [5, 5, 90, 1])) == 4
