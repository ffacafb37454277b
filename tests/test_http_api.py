"""The HTTP contract: seed response shapes, SSE framing, errors, auth, request ids, health."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import CLIENT_KEY, GROQ_KEY, USER, Gateway, Mock, parse_sse, two_providers

MOCK_TEXT = "Hello from the mock provider.\nSecond line"


async def test_chat_answers_in_the_seed_format(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/chat", json={**USER, "max_tokens": 200, "temperature": 0.7})
    assert response.status == 200
    body = await response.json()
    assert body["text"] == MOCK_TEXT
    assert body["provider"] == "groq"
    assert body["model"] == "llama-3.3-70b-versatile"
    # The seed's three counts, and the cost (modelrouter's): 2 and 8 tokens at Groq's bundled
    # price for the model, $0.59 and $0.79 per million.
    assert body["provider_meta"] == {
        "tokens_total": 10,
        "tokens_prompt": 2,
        "tokens_completion": 8,
        "cost_usd": 7.5e-06,
    }
    assert response.headers["x-modelrouter-provider"] == "groq"
    assert response.headers["x-modelrouter-cost-usd"] == "0.0000075"
    sent = (await mock.received())[-1]
    assert sent["body"]["max_tokens"] == 200
    assert sent["body"]["temperature"] == 0.7
    assert sent["headers"]["Authorization"] == f"Bearer {GROQ_KEY}"
    assert sent["headers"]["X-Request-ID"] == response.headers["X-Request-ID"]


async def test_stream_sends_one_data_event_per_chunk_then_done(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    raw = await response.text()
    assert raw.startswith("data: Hello\n\ndata:  from\n\n")
    events = parse_sse(raw)
    assert events[-1] == ("message", "[DONE]")
    # The newline token arrives intact for a spec-compliant client (two data: lines).
    assert ("message", "\n") in events
    assert "".join(data for _, data in events[:-1]) == MOCK_TEXT


async def test_ollama_answers_end_to_end_streamed_and_not(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(PROVIDER_ORDER="ollama", OLLAMA_BASE_URL=mock.url)
    response = await client.post("/chat", json=USER)
    body = await response.json()
    assert body["provider"] == "ollama"
    assert body["model"] == "llama3.2"
    assert body["text"] == MOCK_TEXT
    assert body["provider_meta"]["tokens_completion"] == 8
    response = await client.post("/stream", json={**USER, "max_tokens": 5})
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    assert "".join(d for _, d in events[:-1]) == MOCK_TEXT
    sent = (await mock.received())[-1]
    assert sent["path"] == "/api/chat"
    assert sent["body"]["options"]["num_predict"] == 5
    assert "Authorization" not in sent["headers"]


async def test_hosted_ollama_gets_its_key_as_bearer(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(
        PROVIDER_ORDER="ollama", OLLAMA_BASE_URL=mock.url, OLLAMA_API_KEY="ollama-key-123456"
    )
    await client.post("/chat", json=USER)
    sent = (await mock.received())[-1]
    assert sent["headers"]["Authorization"] == "Bearer ollama-key-123456"


BAD_BODIES: list[tuple[Any, str]] = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[]", "Expected `object`"),
    ({"messages": []}, "length >= 1"),
    ({}, "missing required field `messages`"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "Expected `str`"),
    ({"messages": "hello"}, "Expected `array`"),
    ({**USER, "temperature": 3}, "temperature"),
    ({**USER, "temperature": -0.1}, "temperature"),
    ({**USER, "max_tokens": 0}, "max_tokens"),
    ({**USER, "max_tokens": "ten"}, "max_tokens"),
    ({**USER, "top_p": 1.5}, "top_p"),
    ({**USER, "stop": 7}, "stop"),
    ({**USER, "provider": "nope"}, "unknown or not enabled"),
    ({**USER, "provider": "ollama"}, "unknown or not enabled"),
]


@pytest.mark.parametrize("path", ["/chat", "/stream"])
@pytest.mark.parametrize(("body", "needle"), BAD_BODIES)
async def test_bad_input_is_a_400_with_a_clear_message(
    gateway: Gateway, mock: Mock, path: str, body: Any, needle: str
) -> None:
    client = await gateway(**two_providers(mock))
    if isinstance(body, bytes):
        response = await client.post(path, data=body)
    else:
        response = await client.post(path, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request"
    assert needle in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert await mock.count("") == 0


async def test_oversized_body_is_a_413(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, MAX_BODY_BYTES="2048"))
    big = {"messages": [{"role": "user", "content": "x" * 4096}]}
    response = await client.post("/chat", json=big)
    assert response.status == 413
    body = await response.json()
    assert body["error"]["type"] == "payload_too_large"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_oversized_chunked_body_is_a_413(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, MAX_BODY_BYTES="2048"))

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}]}'

    response = await client.post("/chat", data=chunks())
    assert response.status == 413
    assert (await response.json())["error"]["type"] == "payload_too_large"


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-key", "Basic abc", "Bearer ", f"bearer {CLIENT_KEY}x"]
)
async def test_missing_or_wrong_key_is_a_401(
    gateway: Gateway, mock: Mock, header: str | None
) -> None:
    client = await gateway(**two_providers(mock, API_KEY=f"other-key-9999,{CLIENT_KEY}"))
    headers = {} if header is None else {"Authorization": header}
    response = await client.post("/chat", json=USER, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["type"] == "unauthorized"
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert await mock.count("") == 0


@pytest.mark.parametrize("key", ["other-key-9999", CLIENT_KEY])
async def test_any_of_the_rotated_keys_is_accepted(gateway: Gateway, mock: Mock, key: str) -> None:
    client = await gateway(**two_providers(mock, API_KEY=f"other-key-9999,{CLIENT_KEY}"))
    response = await client.post("/chat", json=USER, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 200


async def test_request_id_is_taken_from_the_client_or_generated(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/chat", json=USER, headers={"X-Request-ID": "abc-123-def"})
    assert response.headers["X-Request-ID"] == "abc-123-def"
    assert (await response.json())["request_id"] == "abc-123-def"
    response = await client.post("/chat", json=USER, headers={"X-Request-ID": "bad id\u00e9!" * 3})
    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32
    for path in ("/health", "/ready", "/metrics", "/nowhere"):
        response = await client.get(path)
        assert response.headers.get("X-Request-ID")


async def test_unknown_route_and_method_are_json_errors(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.get("/nowhere")
    assert response.status == 404
    assert (await response.json())["error"]["type"] == "not_found"
    response = await client.get("/chat")
    assert response.status == 405
    assert (await response.json())["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_health_reports_each_provider_and_the_backend(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok"
    assert body["state_backend"] == "memory"
    assert body["providers"] == {
        "groq": {"state": "ok", "in_flight": 0},
        "openrouter": {"state": "ok", "in_flight": 0},
    }


async def test_ready_stays_200_when_every_provider_fails(gateway: Gateway, mock: Mock) -> None:
    """Every replica shares the providers: a provider outage must not take every replica out
    of the load balancer. Provider health is on /health and in the metrics."""
    client = await gateway(**two_providers(mock, groq="status=500", openrouter="status=500"))
    assert (await client.get("/ready")).status == 200
    assert (await client.post("/chat", json=USER)).status == 502
    assert (await client.get("/ready")).status == 200
    health = await (await client.get("/health")).json()
    assert {p["state"] for p in health["providers"].values()} == {"blacklisted"}


async def test_ready_is_503_while_draining(gateway: Gateway, mock: Mock) -> None:
    from modelrouter.web.runtime import RUNTIME

    client = await gateway(**two_providers(mock))
    client.app[RUNTIME].system.drain()
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["reason"] == "draining"


async def test_metrics_expose_the_seed_names(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    await client.post("/chat", json=USER)
    await client.post("/chat", data=b"{")
    text = await (await client.get("/metrics")).text()
    assert 'modelrouter_requests_total{method="POST",route="/chat",status="200"} 1.0' in text
    assert 'modelrouter_requests_total{method="POST",route="/chat",status="400"} 1.0' in text
    assert 'modelrouter_request_latency_seconds_count{route="/chat"} 2.0' in text
    assert 'modelrouter_provider_success_total{provider="groq"} 1.0' in text
    assert "modelrouter_provider_failures_total" in text
    assert "modelrouter_active_streams 0.0" in text


async def test_no_secret_appears_in_logs_errors_or_metrics(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="status=401,echo_auth=1", API_KEY=CLIENT_KEY))
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    with capture_logs() as logs:
        response = await client.post("/chat", json=USER, headers=auth)
        assert response.status == 200
        await client.post(
            "/chat", json={**USER, "provider": "groq", "fallback": False}, headers=auth
        )
        stream = await client.post("/stream", json=USER, headers=auth)
        await stream.read()
    error = await client.post(
        "/chat", json={**USER, "provider": "groq", "fallback": False}, headers=auth
    )
    bodies = [json.dumps(logs), await error.text(), await (await client.get("/metrics")).text()]
    bodies.append(await (await client.get("/health")).text())
    for text in bodies:
        assert GROQ_KEY not in text
        assert CLIENT_KEY not in text
    assert logs, "the failing provider must have been logged"


WEIRD_BODIES = [
    b"null",
    b"123",
    b'"text"',
    b'{"messages": null}',
    b'{"messages": [null]}',
    b'{"messages": [{"role": "user"}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e309}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999999999999999999}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "hi"}], "fallback": "no"}',
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    b"\xff\xfe{}",
    b"[" * 5000 + b"]" * 5000,
    b'{"messages": [{"role": "user", "content": "hi"}]} trailing',
]


@pytest.mark.parametrize("body", WEIRD_BODIES)
async def test_nothing_a_client_sends_produces_a_500(
    gateway: Gateway, mock: Mock, body: bytes
) -> None:
    client = await gateway(**two_providers(mock))
    for path in ("/chat", "/stream"):
        response = await client.post(path, data=body)
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["request_id"]


async def test_saturated_router_answers_503_with_retry_after(gateway: Gateway, mock: Mock) -> None:
    from modelrouter.web.runtime import RUNTIME

    client = await gateway(**two_providers(mock))
    client.app[RUNTIME].system.router.limit = 0  # requests in flight: the router's bound
    response = await client.post("/chat", json=USER)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["type"] == "overloaded"
