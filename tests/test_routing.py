"""Fallback, blacklist and deadlines, driven over HTTP against the mock provider."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import (
    USER,
    Gateway,
    Mock,
    cut_stream_error,
    free_port,
    parse_sse,
    two_providers,
)
from tests.scrape import scrape

MOCK_TEXT = "Hello from the mock provider.\nSecond line"


async def chat(client, body=USER, path="/chat"):  # type: ignore[no-untyped-def]
    response = await client.post(path, json=body)
    return response, await response.json()


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("status=500", "server_error"),
        ("status=503", "server_error"),
        ("status=429,retry_after=1", "rate_limited"),
        ("status=401", "auth_error"),
        ("status=403", "auth_error"),
        ("malformed=1", "bad_response"),
        ("reset_after=0", "connect_error"),
        ("stream_error_after=0", "server_error"),
    ],
)
async def test_chat_falls_over_on_each_failure_class(
    gateway: Gateway, mock: Mock, spec: str, reason: str
) -> None:
    client = await gateway(**two_providers(mock, groq=spec))
    response, body = await chat(client)
    assert response.status == 200, body
    assert body["provider"] == "openrouter"
    assert body["text"] == MOCK_TEXT
    assert body["attempts"] == 2
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "blacklisted"
    assert health["providers"]["groq"]["last_reason"] == reason
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'modelrouter_provider_failures_total{{provider="groq",reason="{reason}"}} 1.0' in metrics
    )
    assert 'modelrouter_provider_success_total{provider="openrouter"} 1.0' in metrics


async def test_chat_falls_over_when_provider_cannot_be_reached(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock)
    env["GROQ_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    client = await gateway(**env)
    response, body = await chat(client)
    assert response.status == 200
    assert body["provider"] == "openrouter"
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["last_reason"] == "connect_error"


async def test_chat_falls_over_when_provider_is_slower_than_provider_timeout(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="first_delay=2", PROVIDER_TIMEOUT="0.2"))
    response, body = await chat(client)
    assert response.status == 200
    assert body["provider"] == "openrouter"
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["last_reason"] == "timeout"


async def test_stream_falls_over_when_first_chunk_is_late(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="first_delay=2", FIRST_CHUNK_TIMEOUT="0.2"))
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    assert response.headers["x-modelrouter-provider"] == "openrouter"
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    assert "".join(data for _, data in events[:-1]) == MOCK_TEXT
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["last_reason"] == "first_chunk_timeout"


@pytest.mark.parametrize(
    "spec", ["status=500", "reset_after=0", "stream_error_after=0", "status=429", "status=401"]
)
async def test_stream_falls_over_before_the_first_byte(
    gateway: Gateway, mock: Mock, spec: str
) -> None:
    client = await gateway(**two_providers(mock, groq=spec))
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    events = parse_sse(await response.text())
    assert events[-1] == ("message", "[DONE]")
    assert "".join(data for _, data in events[:-1]) == MOCK_TEXT


@pytest.mark.parametrize(
    ("spec", "env"),
    [
        ("reset_after=3", {}),
        ("stream_error_after=3", {}),
        ("malformed=1,tokens=4", {}),
        ("stall_after=3", {"PROVIDER_TIMEOUT": "0.3"}),
    ],
)
async def test_cut_stream_ends_with_error_event_and_no_done(
    gateway: Gateway, mock: Mock, spec: str, env: dict[str, str]
) -> None:
    client = await gateway(**two_providers(mock, groq=spec, **env))
    response = await client.post("/stream", json=USER, headers={"X-Request-ID": "cut-1"})
    assert response.status == 200
    events = parse_sse(await response.text())
    error = cut_stream_error(events)
    assert error["request_id"] == "cut-1"
    assert error["type"] == "upstream_error"
    assert "groq" in error["message"]
    assert [d for k, d in events[:-1]] != []  # some text did reach the client first
    assert await mock.count("") == 0, "no fallback once bytes reached the client"


async def test_every_provider_failing_is_a_502_naming_each_reason(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=500", openrouter="malformed=1"))
    response, body = await chat(client)
    assert response.status == 502
    message = body["error"]["message"]
    assert "groq: server_error" in message
    assert "openrouter: bad_response" in message
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_every_provider_timing_out_is_a_504(gateway: Gateway, mock: Mock) -> None:
    env = two_providers(mock, groq="first_delay=2", openrouter="first_delay=2")
    client = await gateway(**env, PROVIDER_TIMEOUT="0.1")
    response, body = await chat(client)
    assert response.status == 504
    assert body["error"]["type"] == "timeout"


async def test_request_deadline_cuts_the_attempt_and_blames_no_provider(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="first_delay=2", MAX_OPERATION_TIMEOUT="0.2"))
    response, _body = await chat(client)
    assert response.status == 504
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok"
    assert await mock.count("") == 0


async def test_blacklisted_provider_is_skipped_until_its_backoff_expires(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=500", BACKOFF_BASE_SECONDS="0.3"))
    await chat(client)
    assert await mock.count("status=500") == 1
    for _ in range(3):
        _response, body = await chat(client)
        assert body["provider"] == "openrouter"
        assert body["attempts"] == 1  # groq was skipped, not tried
    assert await mock.count("status=500") == 1
    await asyncio.sleep(0.45)
    _response, body = await chat(client)  # half-open: one probe goes to groq, fails again
    assert await mock.count("status=500") == 2
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["failures"] == 2


async def test_upstream_retry_after_extends_the_blacklist(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(
        **two_providers(mock, groq="status=429,retry_after=30", BACKOFF_BASE_SECONDS="0.1")
    )
    await chat(client)
    health = await (await client.get("/health")).json()
    groq = health["providers"]["groq"]
    assert groq["state"] == "blacklisted"
    until = groq["blacklisted_until"]
    from datetime import datetime

    left = datetime.fromisoformat(until) - datetime.now(datetime.fromisoformat(until).tzinfo)
    assert 25 < left.total_seconds() <= 30.5


async def test_http_date_retry_after_is_honoured(gateway: Gateway, mock: Mock) -> None:
    import email.utils
    import time
    from urllib.parse import quote

    date = quote(email.utils.formatdate(time.time() + 60, usegmt=True), safe="")
    client = await gateway(
        **two_providers(mock, groq=f"status=429,retry_after={date}", BACKOFF_BASE_SECONDS="0.1")
    )
    await chat(client)
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "blacklisted"
    await asyncio.sleep(0.2)  # far past the 0.1 s backoff: still out because of Retry-After
    _response, body = await chat(client)
    assert body["attempts"] == 1
    counts = (await mock.stats())["requests"]
    assert sum(n for key, n in counts.items() if key.startswith("/x/status=429")) == 1


async def test_half_open_lets_one_probe_through_and_success_resets(
    gateway: Gateway, mock: Mock
) -> None:
    spec = "status=500,fail_first=1,first_delay=0.3"
    client = await gateway(**two_providers(mock, groq=spec, BACKOFF_BASE_SECONDS="0.1"))
    _response, body = await chat(client)
    assert body["provider"] == "openrouter"
    await asyncio.sleep(0.2)  # the blacklist has expired: groq is half-open
    probe = asyncio.create_task(chat(client))
    await asyncio.sleep(0.1)  # the probe is in flight at groq (it answers after 0.3 s)
    _response, body = await chat(client)
    assert body["provider"] == "openrouter", "a second request must not join the probe"
    _response, body = await probe
    assert body["provider"] == "groq"
    assert await mock.count(spec) == 2
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"] == {"state": "ok", "in_flight": 0}


async def test_when_every_provider_is_blacklisted_the_first_to_recover_is_tried(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=500,fail_first=1", openrouter="status=502,fail_first=1")
    client = await gateway(**env, BACKOFF_BASE_SECONDS="30")
    response, body = await chat(client)
    assert response.status == 502
    response, body = await chat(client)  # both out for ~30 s: try one rather than fail
    assert response.status == 200
    assert body["attempts"] == 1


async def test_named_provider_goes_first_and_others_follow(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, openrouter="status=500"))
    _response, body = await chat(client, {**USER, "provider": "openrouter", "model": "m-1"})
    assert body["provider"] == "groq"
    assert body["attempts"] == 2
    sent = await mock.received()
    assert sent[0]["body"]["model"] == "m-1"
    assert sent[1]["body"]["model"] == "llama-3.3-70b-versatile"


async def test_named_provider_without_fallback_fails_alone(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, openrouter="status=500"))
    body_in = {**USER, "provider": "openrouter", "fallback": False}
    response, body = await chat(client, body_in)
    assert response.status == 502
    assert "groq" not in body["error"]["message"]
    assert await mock.count("") == 0


async def test_provider_slash_model_names_both(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    _response, body = await chat(client, {**USER, "model": "openrouter/some/model"})
    assert body["provider"] == "openrouter"
    assert body["model"] == "some/model"


async def test_upstream_rejecting_the_request_is_returned_without_blacklist(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=400"))
    response, body = await chat(client)
    assert response.status == 400
    assert "HTTP 400" in body["error"]["message"]
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["state"] == "ok"
    assert await mock.count("") == 0, "a bad request is not retried elsewhere"


async def test_concurrent_failures_escalate_the_backoff_once(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="status=500,first_delay=0.1"))
    await asyncio.gather(*(chat(client) for _ in range(5)))
    health = await (await client.get("/health")).json()
    assert health["providers"]["groq"]["failures"] == 1


def ollama_first(mock: Mock, spec: str) -> dict[str, str]:
    return two_providers(mock, PROVIDER_ORDER="ollama,groq", OLLAMA_BASE_URL=f"{mock.url}/x/{spec}")


@pytest.mark.parametrize("path", ["/chat", "/stream", "/v1/chat/completions"])
async def test_ollama_without_the_model_falls_over_and_stays_healthy(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    client = await gateway(**ollama_first(mock, "status=404"))
    for _ in range(2):  # not blacklisted: the next request asks Ollama again
        response = await client.post(path, json={**USER, "stream": path != "/chat"})
        assert response.status == 200
        assert response.headers["x-modelrouter-provider"] == "groq"
        await response.read()
    assert await mock.count("status=404") == 2
    health = await (await client.get("/health")).json()
    assert health["providers"]["ollama"]["state"] == "ok"
    page = await scrape(client)
    failures = "modelrouter_provider_failures_total"
    assert page.value(failures, provider="ollama", reason="model_not_found") == 2.0
    fallbacks = "modelrouter_fallbacks_total"
    labels = {"from_provider": "ollama", "to_provider": "groq", "reason": "model_not_found"}
    assert page.value(fallbacks, **labels) == 2.0


async def test_no_provider_with_the_model_is_a_404_model_not_found(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**ollama_first(mock, "status=404"))
    body = {**USER, "model": "ollama/no-such-model", "fallback": False}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 404
    error = (await response.json())["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert response.headers["x-should-retry"] == "false"
    assert "ollama: model_not_found" in error["message"]
    response = await client.post("/chat", json=body)
    assert response.status == 404
    assert (await response.json())["error"]["type"] == "model_not_found"
    assert (await mock.received())[-1]["body"]["model"] == "no-such-model"
