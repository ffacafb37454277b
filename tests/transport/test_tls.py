"""TLS: certificates always verified, a private CA per provider, the right SNI, TLS 1.2 or newer.

The same cases run on our client and on aiohttp's, against one TLS server signed by a CA that
no trust store knows (generated for the session by trustme).
"""

from __future__ import annotations

import ssl

import pytest

from modelrouter.config import load_settings
from modelrouter.transport import open_pool
from modelrouter.transport.tls import tls_context
from tests.transport.clients import CLIENTS, answer
from tests.transport.conftest import PrivateCA, Serve
from tests.transport.servers import ok


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_a_private_ca_is_trusted_when_given_and_the_connection_reused(
    kind: str, serve: Serve, private_ca: PrivateCA
) -> None:
    sni: list[str] = []
    tls = private_ca.server("localhost", sni=sni)
    server = await serve(lambda n: [ok(f"secured {n}")], tls=tls)
    context = tls_context(str(private_ca.pem))
    async with CLIENTS[kind](tls=context) as client:
        url = server.url("localhost", "/v1")
        assert await client.post(url) == answer(200, "secured 0")
        assert await client.post(url) == answer(200, "secured 1")
    assert server.connections == 1
    assert sni == ["localhost"]


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_the_system_store_does_not_trust_a_private_ca(
    kind: str, serve: Serve, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok("never")], tls=private_ca.server("localhost"))
    async with CLIENTS[kind](tls=tls_context()) as client:
        outcome = await client.post(server.url("localhost", "/v1"))
    assert "certificate verify failed" in outcome.failure
    assert server.received == []


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_a_certificate_for_another_name_is_refused(
    kind: str, serve: Serve, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok("never")], tls=private_ca.server("other.example"))
    async with CLIENTS[kind](tls=tls_context(str(private_ca.pem))) as client:
        outcome = await client.post(server.url("localhost", "/v1"))
    assert "certificate verify failed" in outcome.failure
    assert "localhost" in outcome.failure  # the name that did not match
    assert server.received == []


def test_contexts_require_tls_1_2_and_verify_host_names() -> None:
    for context in (tls_context(), tls_context(cafile=ssl.get_default_verify_paths().cafile)):
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname


async def test_a_provider_ca_bundle_applies_to_that_provider_only(
    serve: Serve, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok(f"secured {n}")], tls=private_ca.server("localhost"))
    url = server.url("localhost", "/v1")
    settings = load_settings(
        {
            "PROVIDER_ORDER": "groq,openrouter",
            "GROQ_API_KEY": "k1",
            "OPENROUTER_API_KEY": "k2",
            "GROQ_BASE_URL": url,
            "OPENROUTER_BASE_URL": url,
            "GROQ_CA_BUNDLE": str(private_ca.pem),
        }
    )
    groq, openrouter = settings.providers
    trusting = open_pool(groq, settings, url=url + "/chat/completions")
    default = open_pool(openrouter, settings, url=url + "/chat/completions")
    head = trusting.header_block("POST", "", {})
    response = await trusting.request(head, b"{}")
    assert await response.read() == b"secured 0"
    response.release()
    with pytest.raises(ssl.SSLCertVerificationError):
        await default.request(default.header_block("POST", "", {}), b"{}")
    await trusting.close()
    await default.close()


async def test_ssl_cert_file_replaces_the_trust_store_for_every_provider(
    serve: Serve, private_ca: PrivateCA
) -> None:
    server = await serve(lambda n: [ok("secured")], tls=private_ca.server("localhost"))
    url = server.url("localhost", "/v1")
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": url, "SSL_CERT_FILE": str(private_ca.pem)}
    settings = load_settings({"PROVIDER_ORDER": "groq", **env})
    pool = open_pool(settings.providers[0], settings, url=url)
    response = await pool.request(pool.header_block("POST", "", {}), b"{}")
    assert await response.read() == b"secured"
    response.release()
    await pool.close()
