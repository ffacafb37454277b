"""Client connections with raw sockets: nothing sent, half a head, half a body, an idle
keep-alive, thousands of idle connections, malformed HTTP, bytes that are not UTF-8.

Each must end in a bounded time with a JSON error (or a plain close), counted in the metrics,
logged in one line without a traceback, and never a 5xx."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.faults.conftest import Gateways
from tests.faults.support import (
    CLIENT_KEY,
    USER,
    GatewayProcess,
    MockProcess,
    fault_env,
    session,
)

HEADER_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 1.0
MAX_CONNECTIONS = 40
AUTH_LINE = f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()


@pytest.fixture(scope="module")
def gateway(mock: MockProcess) -> Iterator[GatewayProcess]:
    env = fault_env(
        mock,
        HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        KEEPALIVE_TIMEOUT_SECONDS=str(KEEPALIVE_TIMEOUT),
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    process = GatewayProcess(env).started()
    yield process
    process.stop()


def connect(gateway: GatewayProcess, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.settimeout(10)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the gateway closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return received, time.monotonic() - started


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    import urllib.request

    from tests.scrape import Page

    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
        return Page(response.read().decode()).value(name, **labels) or 0.0


def timeouts(gateway: GatewayProcess, kind: str) -> float:
    return metric(gateway, "modelrouter_connection_timeouts_total", kind=kind)


def assert_timed_out_with_408(response: bytes, seconds: float) -> dict[str, str]:
    status, headers, body = split(response)
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    assert HEADER_TIMEOUT * 0.8 <= seconds < HEADER_TIMEOUT + 2
    return dict(json.loads(body)["error"])


def test_a_connection_that_sends_nothing_gets_408_and_is_closed(gateway: GatewayProcess) -> None:
    before = timeouts(gateway, "header")
    error = assert_timed_out_with_408(*read_all(connect(gateway)))
    assert error["type"] == "request_timeout"
    assert error["request_id"]
    assert timeouts(gateway, "header") == before + 1


def test_partial_headers_get_408_and_are_closed(gateway: GatewayProcess) -> None:
    sock = connect(gateway, b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    assert_timed_out_with_408(*read_all(sock))


@pytest.mark.parametrize("route", ["/chat", "/v1/chat/completions"])
def test_a_body_shorter_than_its_content_length_gets_408(
    gateway: GatewayProcess, route: str
) -> None:
    head = f"POST {route} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    sock = connect(gateway, head.encode() + AUTH_LINE + b"Content-Length: 100\r\n\r\n{")
    error = assert_timed_out_with_408(*read_all(sock))
    assert "HEADER_TIMEOUT_SECONDS" in error["message"]


def test_trickled_headers_do_not_reset_the_deadline(gateway: GatewayProcess) -> None:
    sock = connect(gateway, b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):  # noqa: PT012 - closed mid-trickle
        for _ in range(40):
            sock.sendall(b"X-A: b\r\n")
            time.sleep(0.1)
    assert time.monotonic() - started < HEADER_TIMEOUT + 2
    sock.close()


def test_an_idle_keep_alive_connection_is_closed(gateway: GatewayProcess) -> None:
    before = timeouts(gateway, "keepalive")
    sock = connect(gateway, b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
    response, seconds = read_all(sock)
    assert split(response)[0] == 200
    assert KEEPALIVE_TIMEOUT * 0.8 <= seconds < KEEPALIVE_TIMEOUT + 2
    assert timeouts(gateway, "keepalive") == before + 1


def test_health_answers_while_many_connections_are_held_past_the_cap(
    gateway: GatewayProcess,
) -> None:
    evicted = metric(gateway, "modelrouter_evicted_connections_total")
    held = [connect(gateway, b"GET /health HTTP/1.1\r\n") for _ in range(MAX_CONNECTIONS * 3)]
    try:
        for _ in range(5):
            status, _, body = split(read_all(connect(gateway, b"GET /health HTTP/1.0\r\n\r\n"))[0])
            assert status == 200
            assert json.loads(body)["status"] == "ok"
        assert metric(gateway, "modelrouter_open_connections") <= MAX_CONNECTIONS
        assert (
            metric(gateway, "modelrouter_evicted_connections_total")
            >= evicted + 2 * MAX_CONNECTIONS
        )
    finally:
        for sock in held:
            sock.close()


async def test_past_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once(
    mock: MockProcess, gateways: Gateways
) -> None:
    env = fault_env(mock, groq="first_delay=10", MAX_CONNECTIONS="3", FIRST_CHUNK_TIMEOUT="20")
    env["PROVIDER_TIMEOUT"] = "20"
    gateway = await gateways(env)
    body = json.dumps(USER).encode()
    request = (
        b"POST /chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + AUTH_LINE
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    busy = [connect(gateway, request) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while (await mock.count("first_delay=10")) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        response, seconds = read_all(connect(gateway, b"GET /health HTTP/1.0\r\n\r\n"))
        assert response == b""  # closed before any work
        assert seconds < 1
    finally:
        for sock in busy:
            sock.close()
    page = await gateway.scrape()
    assert page.value("modelrouter_rejected_connections_total") == 1


MALFORMED = {
    "bad request line": b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03SECRET-MARKER\r\n\r\n",
    "control byte in a header": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: SECRET-MARKER\x01\r\n\r\n"
    ),
    "header without a colon": b"GET /health HTTP/1.1\r\nHost: x\r\nSECRET-MARKER\r\n\r\n",
    "content-length and chunked": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nSECRET-MARKER"
    ),
    "two content-lengths": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "chunked not last": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "bad chunk size": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nSECRET-MARKER"
    ),
    "negative content-length": b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "header line too long": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: "
    + b"a" * 20000
    + b"\r\n\r\n",
    "space before colon": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID : SECRET-MARKER\r\n\r\n"
    ),
    "obsolete line folding": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: b\r\n SECRET-MARKER\r\n\r\n"
    ),
    "bytes in the path": b"GET /he\xffalth?SECRET-MARKER HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_malformed_http_gets_a_json_400_that_echoes_nothing(
    gateway: GatewayProcess, shape: str
) -> None:
    response, _ = read_all(connect(gateway, MALFORMED[shape]))
    status, headers, body = split(response)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert b"SECRET-MARKER" not in response
    assert b"aaaa" not in response
    error = json.loads(body)["error"]
    assert error["type"] == "bad_request"
    assert headers["x-request-id"] == error["request_id"]


def test_parser_errors_are_one_rate_limited_warning_without_traceback(
    gateway: GatewayProcess,
) -> None:
    before = metric(gateway, "modelrouter_bad_http_requests_total")
    started = time.monotonic()
    for _ in range(50):
        read_all(connect(gateway, MALFORMED["control byte in a header"]))
    seconds = time.monotonic() - started
    assert metric(gateway, "modelrouter_bad_http_requests_total") == before + 50
    time.sleep(1.1)  # the next line is allowed, and says how many were left out
    read_all(connect(gateway, MALFORMED["control byte in a header"]))
    time.sleep(0.2)
    lines = [line for line in gateway.log_lines() if line.get("message") == "bad_http_request"]
    assert lines
    assert all(line["level"] == "WARNING" for line in lines)
    assert len(lines) <= 5 + len(MALFORMED) + seconds + 3  # a burst, then one a second
    assert sum(line["suppressed"] for line in lines) > 0
    output = gateway.full_output()
    assert "Traceback" not in output
    assert "SECRET-MARKER" not in output
    assert '"level":"ERROR"' not in output


def test_authorization_that_is_not_utf8_is_a_401_not_a_500(gateway: GatewayProcess) -> None:
    sock = connect(
        gateway,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\x80abc\r\n\r\n",
    )
    status, headers, body = split(read_all(sock)[0])
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "target",
    [
        "/health?%ff%fe=%00&a=%zz",
        "/ready?" + "a=1&" * 200,
        "/metrics?name[]=%c0%af",
        "/v1/models?limit=-1&%ff",
        "/v1/models/groq%2Fx?%ff",
        "/chat?stream=%ff",
    ],
)
def test_query_strings_never_give_a_5xx(gateway: GatewayProcess, target: str) -> None:
    body = json.dumps(USER).encode()
    method = "POST" if target.startswith("/chat") else "GET"
    sock = connect(
        gateway,
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + AUTH_LINE
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    status, _, _ = split(read_all(sock)[0])
    assert status < 500


DEEP = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.mark.parametrize(
    ("route", "field", "param"),
    [
        ("/v1/chat/completions", "response_format", "response_format.json_schema"),
        ("/v1/chat/completions", "tools", "tools[0].function.parameters"),
        ("/chat", "response_format", "response_format.json_schema"),
    ],
)
async def test_deep_nesting_is_a_400_naming_the_parameter(
    gateway: GatewayProcess, route: str, field: str, param: str
) -> None:
    if field == "tools":
        value = '[{"type":"function","function":{"name":"f","parameters":' + DEEP + "}}]"
    else:
        value = '{"type":"json_schema","json_schema":' + DEEP + "}"
    body = '{"model":"auto","messages":[{"role":"user","content":"hi"}],"' + field + '":' + value
    body += "}"
    async with (
        session() as client,
        client.post(
            f"{gateway.url}{route}",
            data=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    assert param in error["message"]
    if route.startswith("/v1"):
        assert error["param"] == param
