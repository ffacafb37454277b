"""What the client is told when no provider answered: the status that says why, and whether
(and when) a retry can help."""

from __future__ import annotations

from tests.conftest import USER, Gateway, Mock, two_providers


async def test_an_upstream_429_from_the_only_provider_is_a_429_with_its_retry_after(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(
        **two_providers(mock, groq="status=429,retry_after=7"), PROVIDER_ORDER="groq"
    )
    response = await client.post("/chat", json=USER)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["x-should-retry"] == "true"
    assert (await response.json())["error"]["type"] == "rate_limited"


async def test_429s_from_every_provider_give_the_shortest_retry_after(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(
        **two_providers(
            mock, groq="status=429,retry_after=9", openrouter="status=429,retry_after=4"
        )
    )
    response = await client.post("/v1/chat/completions", json={**USER, "model": "auto"})
    assert response.status == 429
    assert response.headers["Retry-After"] == "4"
    assert response.headers["retry-after-ms"] == "4000"
    assert response.headers["x-should-retry"] == "true"


async def test_a_429_beside_a_server_error_is_a_502(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(
        **two_providers(mock, groq="status=429,retry_after=9", openrouter="status=500")
    )
    response = await client.post("/chat", json=USER)
    assert response.status == 502
    assert response.headers["x-should-retry"] == "false"
