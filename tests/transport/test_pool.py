"""The pool: requests on kept-alive connections, bodies piece by piece, back-pressure, the
request head (target, Host, User-Agent, credentials), redirect targets and compressed streams.
What a response may look like on the wire is test_conformance's job."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from modelrouter.transport import BadResponse, Pool, Proxy
from modelrouter.transport import connection as connection_module
from tests.conftest import Mock, free_port
from tests.transport.conftest import Serve
from tests.transport.servers import chunked, ok


async def open_response(pool: Pool):  # type: ignore[no-untyped-def]
    return await pool.request(pool.header_block("POST", "/x", {}), b"{}")


async def test_request_and_keep_alive_against_the_mock(mock: Mock) -> None:
    pool = Pool(mock.url + "/v1")
    head = pool.header_block("POST", "/chat/completions", {"Content-Type": "application/json"})
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    for _ in range(3):
        response = await pool.request(head, body, b"X-Request-ID: t-1\r\n")
        assert response.status == 200
        assert (response.header("Content-Type") or "").startswith("application/json")
        assert response.header("x-not-there") is None
        assert b"Hello from the mock" in await response.read()
        response.release()
    assert len(pool._idle) == 1, "one connection, reused"
    sent = await mock.received()
    assert sent[-1]["headers"]["X-Request-ID"] == "t-1"
    await pool.close()


async def test_a_chunked_body_arrives_piece_by_piece(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = await serve(lambda n: [head + b"5\r\nhello\r\n", 0.2, b"6\r\n world\r\n0\r\n\r\n"])
    pool = Pool(server.url())
    response = await open_response(pool)
    pieces = response.iter_body()
    assert await anext(pieces) == b"hello"  # before the rest was even sent
    assert [p async for p in pieces] == [b" world"]
    response.release()
    await pool.close()


async def test_a_refused_connection_raises_oserror() -> None:
    pool = Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionRefusedError):
        await open_response(pool)


async def test_a_slow_reader_pauses_the_socket(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "HIGH_WATER", 1024)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n"
    server = await serve(lambda n: [head, *([b"x" * 1024] * 64)])
    pool = Pool(server.url())
    response = await open_response(pool)
    await asyncio.sleep(0.1)
    conn = response._conn
    assert conn is not None
    assert conn._paused, "past the high-water mark the client stops reading"
    assert len(await response.read()) == 65536
    await pool.close()


def test_header_block_carries_path_prefix_host_and_headers() -> None:
    pool = Pool("https://api.example.com/openai/v1")
    block = pool.header_block("POST", "/chat/completions", {"Authorization": "Bearer k"})
    assert block == (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\n"
        b"Authorization: Bearer k\r\n"
    )
    assert Pool("http://h:8080").authority == "h:8080"
    with pytest.raises(ValueError, match="not an http"):
        Pool("ftp://h")


def test_an_ipv6_literal_is_bracketed_in_host() -> None:
    pool = Pool("http://[::1]:9000/v1")
    assert pool.host == "::1"
    assert b"\r\nHost: [::1]:9000\r\n" in pool.header_block("POST", "/chat", {})
    assert Pool("https://[2001:db8::7]/v1").authority == "[2001:db8::7]"


def test_user_agent_goes_out_unless_the_adapter_sets_one() -> None:
    pool = Pool("http://h/v1", user_agent="modelrouter/9")
    assert b"\r\nUser-Agent: modelrouter/9\r\n" in pool.header_block("POST", "/c", {})
    own = pool.header_block("POST", "/c", {"user-agent": "mine"})
    assert b"modelrouter/9" not in own
    assert b"user-agent: mine" in own


def test_credentials_in_the_base_url_go_out_as_basic_auth_and_nowhere_else() -> None:
    pool = Pool("https://bob:p%40ss@ollama.example.com/base")
    block = pool.header_block("POST", "/api/chat", {})
    assert b"Authorization: Basic Ym9iOnBAc3M=\r\n" in block  # bob:p@ss
    assert b"p%40ss" not in block
    assert b"Host: ollama.example.com\r\n" in block
    assert pool.authority == "ollama.example.com"


def test_through_a_proxy_plain_http_uses_the_absolute_form_and_proxy_credentials() -> None:
    pool = Pool("http://origin.internal:8080/v1", proxy=Proxy("http://u:pw@proxy:3128"))
    block = pool.header_block("POST", "/chat", {})
    assert block.startswith(b"POST http://origin.internal:8080/v1/chat HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic dTpwdw==\r\n" in block  # u:pw


def test_through_a_proxy_https_keeps_the_origin_form_and_no_proxy_header() -> None:
    # The CONNECT request carries the proxy's credentials; the tunnelled request must not.
    pool = Pool("https://api.example.com/v1", proxy=Proxy("http://u:pw@proxy:3128"))
    block = pool.header_block("POST", "/chat", {})
    assert block.startswith(b"POST /v1/chat HTTP/1.1\r\n")
    assert b"Proxy-Authorization" not in block


def test_a_path_with_spaces_or_non_ascii_is_percent_encoded_once() -> None:
    pool = Pool("http://h/my models/ñ%20x")
    assert pool.header_block("POST", "", {}).startswith(b"POST /my%20models/%C3%B1%20x HTTP/1.1")


def test_an_international_host_name_goes_out_in_its_ascii_form() -> None:
    pool = Pool("https://bücher.example/v1")
    assert pool.host == "xn--bcher-kva.example"
    assert b"Host: xn--bcher-kva.example\r\n" in pool.header_block("POST", "", {})


def test_a_proxy_never_shows_its_credentials() -> None:
    proxy = Proxy("http://user:hunter2@proxy.internal:3128")
    assert "hunter2" not in repr(proxy)
    assert proxy.label == "proxy.internal:3128"
    assert Proxy("proxy.internal:3128").label == "proxy.internal:3128"  # curl's bare host:port
    with pytest.raises(ValueError, match="http://"):
        Proxy("socks5://proxy:1080")


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("Location: https://elsewhere.example/v1", "elsewhere.example"),
        ("Location: /v2/chat", "127.0.0.1"),  # relative: our own host
        ("Location: http://[::1", "a malformed Location"),
        ("X-No-Location: 1", "nowhere (no Location)"),
    ],
)
async def test_a_redirect_names_where_it_pointed(location: str, host: str, serve: Serve) -> None:
    server = await serve(lambda n: [ok("", location, status="307 Temporary Redirect")])
    pool = Pool(server.url())
    response = await open_response(pool)
    assert response.redirect_host() == host
    response.release()
    await pool.close()


async def test_a_compressed_stream_is_inflated_in_bounded_pieces(serve: Serve) -> None:
    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(50_000))  # ~0.8 MB
    packer = zlib.compressobj(wbits=31)
    packed = packer.compress(events) + packer.flush()
    pieces = [packed[start : start + 4096] for start in range(0, len(packed), 4096)]
    response_bytes = chunked(*pieces).replace(
        b"200 OK\r\n", b"200 OK\r\nContent-Encoding: gzip\r\n", 1
    )
    server = await serve(lambda n: [response_bytes])
    pool = Pool(server.url(), max_body=1024)  # the whole-body bound: not for streams
    response = await open_response(pool)
    received = [piece async for piece in response.iter_body()]
    response.release()
    assert b"".join(received) == events
    assert max(len(p) for p in received) <= 256 * 1024
    await pool.close()


async def test_a_compressed_stream_cut_short_is_a_bad_response(serve: Serve) -> None:
    packed = gzip.compress(b"data: {}\n\n" * 1000)[:-8]
    server = await serve(lambda n: [ok(packed, "Content-Encoding: gzip")])
    pool = Pool(server.url())
    response = await open_response(pool)
    with pytest.raises(BadResponse, match="ended early"):
        _ = [piece async for piece in response.iter_body()]
    response.release()
    await pool.close()
