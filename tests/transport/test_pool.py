"""The upstream HTTP/1.1 client: keep-alive, chunked bodies, gzip, failures, back-pressure."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelrouter.transport import BadResponse, ConnectionLost, Pool, Proxy
from modelrouter.transport import connection as connection_module
from tests.conftest import Mock, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A scripted TCP server: each test writes exactly the bytes it wants the client to see."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


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


async def test_streamed_chunked_body_arrives_in_pieces(raw_server) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    pieces = response.iter_body()
    assert await anext(pieces) == b"hello"
    release.set()
    assert [p async for p in pieces] == [b" world"]
    response.release()
    await pool.close()


async def test_gzip_body_is_decoded(raw_server) -> None:  # type: ignore[no-untyped-def]
    packed = gzip.compress(b'{"ok": true}')

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
            + packed
        )
        await writer.drain()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    assert await response.read() == b'{"ok": true}'
    await pool.close()


async def test_connection_closed_mid_body_is_connection_lost(raw_server) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    with pytest.raises(ConnectionLost):
        await response.read()
    response.release()
    assert pool._idle == [], "a broken connection is never reused"
    await pool.close()


async def test_garbage_instead_of_http_is_a_bad_response(raw_server) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    pool = Pool(await raw_server(handler))
    with pytest.raises(BadResponse):
        await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    await pool.close()


async def test_refused_connection_raises_oserror() -> None:
    pool = Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionRefusedError):
        await pool.request(pool.header_block("POST", "/x", {}), b"{}")


async def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(raw_server) -> None:  # type: ignore[no-untyped-def]
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if connections == 1:
            writer.close()  # the server drops the idle connection after the first answer

    pool = Pool(await raw_server(handler))
    head = pool.header_block("POST", "/x", {})
    first = await pool.request(head, b"{}")
    assert await first.read() == b"ok"
    first.release()
    await asyncio.sleep(0.05)  # the close reaches the client while the connection sits idle
    second = await pool.request(head, b"{}")
    assert await second.read() == b"ok"
    assert connections == 2
    await pool.close()


async def test_slow_reader_pauses_the_socket(
    raw_server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(connection_module, "HIGH_WATER", 1024)
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n")
        for _ in range(64):
            writer.write(b"x" * 1024)
            await writer.drain()
        sent.set()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
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
async def test_a_redirect_names_where_it_pointed(location: str, host: str, raw_server) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            f"HTTP/1.1 307 Temporary Redirect\r\n{location}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    assert response.redirect_host() == host
    response.release()
    await pool.close()


async def test_a_compressed_stream_is_inflated_in_bounded_pieces(raw_server) -> None:  # type: ignore[no-untyped-def]
    import zlib

    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(50_000))  # ~0.8 MB
    packer = zlib.compressobj(wbits=31)
    packed = packer.compress(events) + packer.flush()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for start in range(0, len(packed), 4096):
            piece = packed[start : start + 4096]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    pool = Pool(await raw_server(handler), max_body=1024)  # the whole-body bound: not for streams
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    pieces = [piece async for piece in response.iter_body()]
    response.release()
    assert b"".join(pieces) == events
    assert max(len(p) for p in pieces) <= 256 * 1024
    await pool.close()


async def test_a_compressed_stream_cut_short_is_a_bad_response(raw_server) -> None:  # type: ignore[no-untyped-def]
    packed = gzip.compress(b"data: {}\n\n" * 1000)[:-8]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(packed), packed)
        )
        await writer.drain()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    with pytest.raises(BadResponse, match="ended early"):
        _ = [piece async for piece in response.iter_body()]
    response.release()
    await pool.close()


async def test_gzip_followed_by_other_bytes_is_a_bad_response(raw_server) -> None:  # type: ignore[no-untyped-def]
    packed = gzip.compress(b'{"ok": true}') + b"trailing garbage"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(packed), packed)
        )
        await writer.drain()

    pool = Pool(await raw_server(handler))
    response = await pool.request(pool.header_block("POST", "/x", {}), b"{}")
    with pytest.raises(BadResponse, match="after the end of the compressed body"):
        await response.read()
    response.release()
    await pool.close()
