"""Forward proxies: a real tinyproxy, CONNECT for https, absolute-form for http, credentials,
refusals, and the choice of proxy from HTTP(S)_PROXY / NO_PROXY / <PROVIDER>_PROXY.

The origins here accept connections from the proxy's address (127.0.0.2) only, so an answer
proves the request went through the proxy.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from structlog.testing import capture_logs

from modelrouter.config import UpstreamSettings, load_settings
from modelrouter.transport import USER_AGENT, Pool, Proxy, ProxyError, open_pool
from modelrouter.transport.proxy import bypassed, choose_proxy
from modelrouter.transport.tls import tls_context
from tests.conftest import free_port
from tests.transport.clients import CLIENTS, answer
from tests.transport.conftest import PrivateCA, Serve
from tests.transport.proxies import PASSWORD, PROXY_PEER, USER, Proxies
from tests.transport.servers import CLOSE, ok

# -- through a real proxy, both clients -------------------------------------------------------


@pytest.mark.parametrize("kind", list(CLIENTS))
@pytest.mark.parametrize("guarded", [False, True], ids=["open", "with credentials"])
async def test_plain_http_goes_through_the_proxy_in_absolute_form(
    kind: str, guarded: bool, serve: Serve, proxies: Proxies
) -> None:
    server = await serve(lambda n: [ok(f"via proxy {n}")], allow_peer=PROXY_PEER)
    proxy = proxies.guarded_url if guarded else proxies.open.url()
    async with CLIENTS[kind](proxy=proxy) as client:
        assert await client.post(server.url(path="/v1/chat")) == answer(200, "via proxy 0")
        # tinyproxy closes the client's connection after each answer without announcing it;
        # a pause lets both clients see the close (the race itself: test_conformance).
        await asyncio.sleep(0.05)
        assert await client.post(server.url(path="/v1/chat")) == answer(200, "via proxy 1")
    seen = server.received[0]
    assert seen.request_line == "POST /v1/chat HTTP/1.1"  # the proxy turned it to origin-form
    assert "tinyproxy" in (seen.header("via") or "")
    assert seen.header("proxy-authorization") is None, "credentials stop at the proxy"
    assert server.refused == 0


@pytest.mark.parametrize("kind", list(CLIENTS))
@pytest.mark.parametrize("guarded", [False, True], ids=["open", "with credentials"])
async def test_https_goes_through_a_connect_tunnel_verified_end_to_end(
    kind: str, guarded: bool, serve: Serve, proxies: Proxies, private_ca: PrivateCA
) -> None:
    sni: list[str] = []
    tls = private_ca.server("localhost", sni=sni)
    server = await serve(lambda n: [ok(f"tunnelled {n}")], tls=tls, allow_peer=PROXY_PEER)
    proxy = proxies.guarded_url if guarded else proxies.open.url()
    async with CLIENTS[kind](proxy=proxy, tls=tls_context(str(private_ca.pem))) as client:
        url = server.url("localhost", "/v1/chat")
        assert await client.post(url) == answer(200, "tunnelled 0")
        assert await client.post(url) == answer(200, "tunnelled 1")
    assert server.connections == 1, "the tunnel is kept alive and reused"
    assert sni == ["localhost"], "SNI names the origin, not the proxy"
    assert server.received[0].header("proxy-authorization") is None


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_the_origin_certificate_is_verified_inside_the_tunnel(
    kind: str, serve: Serve, proxies: Proxies, private_ca: PrivateCA
) -> None:
    tls = private_ca.server("other.example")
    server = await serve(lambda n: [ok("never")], tls=tls, allow_peer=PROXY_PEER)
    async with CLIENTS[kind](proxy=proxies.open.url(), tls=tls_context(str(private_ca.pem))) as c:
        outcome = await c.post(server.url("localhost", "/v1"))
    assert "certificate verify failed" in outcome.failure
    assert server.received == []


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_wrong_proxy_credentials_fail_and_say_it_was_the_proxy(
    kind: str, serve: Serve, proxies: Proxies, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok("never")], tls=private_ca.server("localhost"))
    wrong = proxies.guarded.url(user=USER, password="not-" + PASSWORD)
    async with CLIENTS[kind](proxy=wrong, tls=tls_context(str(private_ca.pem))) as client:
        outcome = await client.post(server.url("localhost", "/v1"))
    # tinyproxy answers 401 to wrong credentials (407 when there are none).
    assert re.search(r"\b40[17]\b", outcome.failure)
    assert server.received == []
    if kind == "ours":
        assert f"proxy 127.0.0.1:{proxies.guarded.port} refused CONNECT" in outcome.failure
        assert PASSWORD not in outcome.failure
    else:
        # The reference differs: aiohttp's error quotes the proxy URL, password included.
        # Ours is right: an error message travels to logs and clients, a credential must not.
        assert PASSWORD in outcome.failure


async def test_missing_proxy_credentials_on_plain_http_are_the_proxys_refusal(
    serve: Serve, proxies: Proxies
) -> None:
    # aiohttp hands the proxy's 407 back as if the origin had answered it (the reference
    # differs here): ours is right, a 407 is never the provider's answer, and blaming the
    # provider for it (bad_response) would hide that the proxy wants credentials.
    server = await serve(lambda n: [ok("never")])
    pool = Pool(server.url(path="/v1"), proxy=Proxy(proxies.guarded.url()))
    with pytest.raises(ProxyError, match=r"proxy 127\.0\.0\.1:\d+ refused the request: 407"):
        await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert server.received == []
    reference = CLIENTS["aiohttp"](proxy=proxies.guarded.url())
    assert (await reference.post(server.url(path="/v1"))).status == 407
    await reference.close()


async def test_a_refused_connect_names_the_proxy_and_its_answer(
    serve: Serve, proxies: Proxies, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok("never")], tls=private_ca.server("localhost"))
    pool = Pool(
        server.url("localhost", "/v1"),
        proxy=Proxy(proxies.strict.url()),  # CONNECT to port 443 only
        ssl_context=tls_context(str(private_ca.pem)),
    )
    with pytest.raises(
        ProxyError, match=r"proxy 127\.0\.0\.1:\d+ refused CONNECT to localhost:\d+: 403"
    ):
        await pool.request(pool.header_block("POST", "", {}), b"{}")


async def test_an_origin_the_proxy_cannot_reach_is_the_proxys_answer(proxies: Proxies) -> None:
    pool = Pool(f"https://localhost:{free_port()}/v1", proxy=Proxy(proxies.open.url()))
    with pytest.raises(ProxyError, match=r"refused CONNECT to localhost:\d+: 5\d\d"):
        await pool.request(pool.header_block("POST", "", {}), b"{}")


async def test_a_proxy_that_is_down_is_named() -> None:
    port = free_port()
    pool = Pool("https://api.example.com/v1", proxy=Proxy(f"http://u:pw@127.0.0.1:{port}"))
    with pytest.raises(ProxyError, match=rf"proxy 127\.0\.0\.1:{port} unreachable") as caught:
        await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert "pw" not in str(caught.value).replace("proxy", "")


# -- which proxy, if any ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "entry"),
    [
        ("api.example.com", 443, "*"),
        ("api.example.com", 443, "example.com"),
        ("api.example.com", 443, ".example.com"),
        ("example.com", 443, ".example.com"),
        ("example.com", 443, "*.example.com"),
        ("API.Example.COM.", 443, "api.example.com"),
        ("api.example.com", 8443, "api.example.com:8443"),
        ("10.1.2.3", 80, "10.0.0.0/8"),
        ("10.1.2.3", 80, "10.1.2.3"),
        ("::1", 9000, "::1"),
        ("::1", 9000, "[::1]:9000"),
        ("::1", 9000, "::/64"),
        ("localhost", 11434, "localhost"),
    ],
)
def test_no_proxy_sends_matching_hosts_direct(host: str, port: int, entry: str) -> None:
    assert bypassed(host, port, ["other.org", entry])


@pytest.mark.parametrize(
    ("host", "port", "entry"),
    [
        ("notexample.com", 443, "example.com"),
        ("api.example.com", 443, "api.example.com:8443"),
        ("10.1.2.3", 80, "10.2.0.0/16"),
        ("10.1.2.3", 80, "10.1.2"),
        ("api.example.com", 443, "exam*"),
        ("api.example.com", 443, "not a cidr/99"),
        ("::1", 9000, "[::1]:9001"),
        ("127.0.0.1", 80, "localhost"),  # names are not resolved, as in curl
    ],
)
def test_no_proxy_leaves_other_hosts_to_the_proxy(host: str, port: int, entry: str) -> None:
    assert not bypassed(host, port, [entry])


def test_the_scheme_chooses_the_proxy_and_no_proxy_overrides_it() -> None:
    upstream = UpstreamSettings(
        http_proxy="http://plain:3128", https_proxy="http://tls:3128", no_proxy=("localhost",)
    )
    assert repr(choose_proxy("https://api.groq.com/v1", None, upstream)) == "Proxy(tls:3128)"
    assert repr(choose_proxy("http://models.internal/v1", None, upstream)) == "Proxy(plain:3128)"
    assert choose_proxy("http://localhost:11434", None, upstream) is None
    assert choose_proxy("https://api.groq.com/v1", None, UpstreamSettings()) is None


def test_a_provider_override_beats_the_environment_and_empty_means_direct() -> None:
    upstream = UpstreamSettings(https_proxy="http://tls:3128", no_proxy=("*",))
    chosen = choose_proxy("https://api.groq.com/v1", "http://own:8080", upstream)
    assert repr(chosen) == "Proxy(own:8080)"
    assert choose_proxy("https://api.groq.com/v1", "", upstream) is None


# -- a provider's pool, from the environment ------------------------------------------------------


async def test_a_provider_reachable_only_through_the_proxy_answers_with_credentials(
    serve: Serve, proxies: Proxies, private_ca: PrivateCA
) -> None:
    server = await serve(
        lambda n: [ok("through")], tls=private_ca.server("localhost"), allow_peer=PROXY_PEER
    )
    url = server.url("localhost", "/v1")
    env = {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": "gsk-test",
        "GROQ_BASE_URL": url,
        "GROQ_CA_BUNDLE": str(private_ca.pem),
        "HTTPS_PROXY": proxies.guarded_url,
    }
    settings = load_settings(env)
    with capture_logs() as logs:
        pool = open_pool(settings.providers[0], settings, url=url)
    assert logs[0]["proxy"] == f"127.0.0.1:{proxies.guarded.port}"
    assert PASSWORD not in str(logs)
    response = await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert await response.read() == b"through"
    response.release()
    assert server.received[0].header("user-agent") == USER_AGENT == "modelrouter/0.1.0"
    await pool.close()


async def test_no_proxy_sends_a_loopback_provider_direct(serve: Serve, proxies: Proxies) -> None:
    server = await serve(lambda n: [ok("direct")])
    url = server.url(path="/v1")
    env = {
        "PROVIDER_ORDER": "ollama",
        "OLLAMA_BASE_URL": url,
        "http_proxy": proxies.open.url(),
        "NO_PROXY": "localhost,127.0.0.1,::1",
    }
    settings = load_settings(env)
    pool = open_pool(settings.providers[0], settings, url=url)
    assert pool.proxy is None
    response = await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert await response.read() == b"direct"
    response.release()
    assert server.received[0].peer == "127.0.0.1"
    await pool.close()


# -- proxies that misbehave (scripted, not tinyproxy) ---------------------------------------


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ([CLOSE], "closed the connection during CONNECT"),
        ([b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 20_000, 1.0], "oversized reply to CONNECT"),
        ([b"HTTP/1.1 200 Connection established\r\n\r\nEARLY"], "sent data before the tunnel"),
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], "refused CONNECT to api.example.com:443: a malformed reply"),
        (
            [b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"],
            "refused CONNECT to api.example.com:443: 502 Bad Gateway",
        ),
    ],
)
async def test_a_misbehaving_proxy_is_a_proxy_error_naming_it(
    serve: Serve, reply: list[bytes | float | None], message: str
) -> None:
    fake = await serve(lambda n: reply)
    pool = Pool("https://api.example.com/v1", proxy=Proxy(fake.url()))
    with pytest.raises(ProxyError, match=f"proxy 127.0.0.1:{fake.port}") as caught:
        await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert message in str(caught.value)
    assert fake.received[0].request_line == "CONNECT api.example.com:443 HTTP/1.1"
    assert fake.received[0].header("host") == "api.example.com:443"


async def test_connect_to_an_ipv6_origin_brackets_it(serve: Serve) -> None:
    fake = await serve(lambda n: [b"HTTP/1.1 403 Forbidden\r\n\r\n"])
    pool = Pool("https://[2001:db8::1]:8443/v1", proxy=Proxy(f"http://u:p@127.0.0.1:{fake.port}"))
    with pytest.raises(ProxyError, match="403 Forbidden"):
        await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert fake.received[0].request_line == "CONNECT [2001:db8::1]:8443 HTTP/1.1"
    assert fake.received[0].header("proxy-authorization") == "Basic dTpw"
