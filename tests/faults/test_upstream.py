"""The fault matrix, upstream side: each row is one fault of the first provider (groq, on the mock
provider) behind a real gateway process, with a healthy second provider (openrouter).

Every row asserts what the client gets, what the metrics say, and that nothing leaks afterwards
(client and upstream connections, tasks, requests, streams and attempts in flight); the first
ones also that no key reached the gateway's log."""

from __future__ import annotations

import email.utils
import time
from datetime import datetime
from typing import Any

import pytest

from modelrouter.mock.text import reply_tokens
from tests.conftest import cut_stream_error, free_port
from tests.faults.conftest import Gateways
from tests.faults.support import (
    AUTH,
    USER,
    GatewayProcess,
    MockProcess,
    answered,
    chunks,
    fault_env,
    no_leaks,
    read_stream,
    session,
)
from tests.scrape import Page

STREAM_TOKENS = reply_tokens(8)  # the mock's answer at its default length


async def chat(url: str) -> tuple[int, dict[str, Any]]:
    async with (
        session() as client,
        client.post(f"{url}/chat", json=USER, headers=AUTH) as response,
    ):
        return response.status, await response.json()


async def stream(url: str, route: str = "/stream") -> tuple[int, list[tuple[str, str]]]:
    body: dict[str, object] = dict(USER)
    if route != "/stream":
        body |= {"model": "auto", "stream": True}
    async with (
        session() as client,
        client.post(f"{url}{route}", json=body, headers=AUTH) as response,
    ):
        return response.status, await read_stream(response)


def failures(page: Page, reason: str, provider: str = "groq") -> float | None:
    return page.value("modelrouter_provider_failures_total", provider=provider, reason=reason)


def fell_over(page: Page, reason: str) -> float | None:
    """Requests moved from groq to openrouter for `reason`."""
    return page.value(
        "modelrouter_fallbacks_total", from_provider="groq", to_provider="openrouter", reason=reason
    )


async def answered_by_openrouter(gateway: GatewayProcess) -> dict[str, Any]:
    """A /chat that groq's fault moved to openrouter; groq's health afterwards."""
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    assert body["attempts"] == 2
    groq: dict[str, Any] = (await gateway.health())["providers"]["groq"]
    return groq


async def streamed_whole(gateway: GatewayProcess) -> None:
    """A /stream answered in full (by whichever provider), ending with [DONE]."""
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    assert events[-1] == ("message", "[DONE]")


async def cut_after(gateway: GatewayProcess, sent: int, route: str = "/stream") -> dict[str, Any]:
    """A stream that got its first `sent` chunks, then an error event: that error."""
    code, events = await stream(gateway.url, route)
    assert code == 200
    if route == "/stream":
        assert chunks(events) == STREAM_TOKENS[:sent]
    error = cut_stream_error(events)
    assert error["retryable"] is True
    assert error["request_id"]
    return error


def seconds_until(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() - time.time()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "server_error"), (502, "server_error"), (503, "server_error"), (504, "timeout")],
)
async def test_upstream_5xx_falls_over_to_the_next_provider(
    mock: MockProcess, gateways: Gateways, status: int, reason: str
) -> None:
    spec = f"status={status}"
    gateway = await gateways(fault_env(mock, groq=spec))
    assert (await answered_by_openrouter(gateway))["state"] == "blacklisted"
    page = await no_leaks(gateway, mock)
    assert failures(page, reason) == 1
    assert fell_over(page, reason) == 1
    assert page.value("modelrouter_provider_state", provider="groq") == 2  # blacklisted
    assert answered(page, "/chat", 200) == 1
    assert await mock.count(spec) == 1
    assert not gateway.secrets_in_log()


def http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


# (Retry-After as sent, the blacklist it should give: base 2 s +-10%, or what the header says)
RETRY_AFTER = {
    "seconds": ("7", 7.0),
    "http_date": (None, 30.0),  # 30 s ahead, written at the time of the test
    "absent": ("none", 2.0),
    "negative": ("-5", 2.0),
    "garbage": ("soon-ish", 2.0),
}


@pytest.mark.parametrize("form", list(RETRY_AFTER))
async def test_upstream_429_blacklists_for_its_retry_after(
    mock: MockProcess, gateways: Gateways, form: str
) -> None:
    header, expected = RETRY_AFTER[form]
    value = http_date(30) if header is None else header
    spec = f"status=429,retry_after={value.replace(' ', '%20').replace(',', '%2C')}"
    gateway = await gateways(fault_env(mock, groq=spec))
    groq = await answered_by_openrouter(gateway)
    assert groq["state"] == "blacklisted"
    assert groq["last_reason"] == "rate_limited"
    left = seconds_until(groq["blacklisted_until"])
    assert expected * 0.85 - 1.5 <= left <= expected * 1.1 + 0.5, (form, left)
    page = await no_leaks(gateway, mock)
    assert failures(page, "rate_limited") == 1
    assert fell_over(page, "rate_limited") == 1


async def test_upstream_429_with_a_huge_retry_after_blacklists_for_backoff_max_at_most(
    mock: MockProcess, gateways: Gateways
) -> None:
    """Retry-After: 99999999 once blacklisted groq until 2030; BACKOFF_MAX_SECONDS bounds it."""
    spec = "status=429,retry_after=99999999"
    gateway = await gateways(fault_env(mock, groq=spec, BACKOFF_MAX_SECONDS="60"))
    groq = await answered_by_openrouter(gateway)
    assert groq["state"] == "blacklisted"
    assert seconds_until(groq["blacklisted_until"]) <= 60 * 1.1
    await no_leaks(gateway, mock)


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_auth_error_falls_over_and_blacklists_for_backoff_max(
    mock: MockProcess, gateways: Gateways, status: int
) -> None:
    gateway = await gateways(fault_env(mock, groq=f"status={status}"))
    groq = await answered_by_openrouter(gateway)
    assert groq["last_reason"] == "auth_error"
    assert seconds_until(groq["blacklisted_until"]) > 50  # BACKOFF_MAX_SECONDS=60, jitter
    page = await no_leaks(gateway, mock)
    assert failures(page, "auth_error") == 1
    assert not gateway.secrets_in_log()


async def test_slow_first_byte_falls_over_within_first_chunk_timeout(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="first_delay=5"))
    started = time.monotonic()
    await streamed_whole(gateway)
    assert time.monotonic() - started < 4  # FIRST_CHUNK_TIMEOUT=1, not the upstream's 5 s
    page = await no_leaks(gateway, mock)
    assert failures(page, "first_chunk_timeout") == 1
    assert fell_over(page, "first_chunk_timeout") == 1


# Faults before the first byte reached the client: the next provider answers.
# (groq's fault spec, the route asked, the failure class groq is blamed for)
FALLS_OVER = {
    "reset before the first chunk": ("reset_after=0", "/stream", "connect_error"),
    "error object before the first chunk": ("stream_error_after=0", "/stream", "server_error"),
    "truncated body": ("truncate=1", "/chat", "connect_error"),
    "HTML with status 200 (/chat)": ("html=1", "/chat", "bad_response"),
    "HTML with status 200 (/stream)": ("html=1", "/stream", "bad_response"),
    "a whole answer that never ends": ("hold_open=1", "/chat", "timeout"),
}


@pytest.mark.parametrize("row", list(FALLS_OVER))
async def test_a_fault_before_the_first_byte_falls_over(
    mock: MockProcess, gateways: Gateways, row: str
) -> None:
    spec, route, reason = FALLS_OVER[row]
    gateway = await gateways(fault_env(mock, groq=spec))
    if route == "/chat":
        await answered_by_openrouter(gateway)
    else:
        await streamed_whole(gateway)
    page = await no_leaks(gateway, mock)
    assert failures(page, reason) == 1
    assert fell_over(page, reason) == 1


# Faults after the first byte: the stream ends with a retryable error event, never [DONE].
# (groq's fault spec, chunks the client got first, the route, the failure class, the message)
CUT = {
    "stall mid-stream": ("stall_after=2", 2, "/stream", "timeout", "no data for 1.5s"),
    "reset after the first chunk": (
        "reset_after=3",
        3,
        "/v1/chat/completions",
        "connect_error",
        "",
    ),
    "truncated stream": ("truncate=1", 1, "/stream", "connect_error", ""),
    "stream without [DONE]": ("no_done=1", 8, "/stream", "bad_response", "end marker"),
    "error object inside a stream": (
        "stream_error_after=2",
        2,
        "/stream",
        "server_error",
        "mock stream error",
    ),
}


@pytest.mark.parametrize("row", list(CUT))
async def test_a_fault_after_the_first_byte_ends_the_stream_with_an_error_event(
    mock: MockProcess, gateways: Gateways, row: str
) -> None:
    spec, sent, route, reason, message = CUT[row]
    gateway = await gateways(fault_env(mock, groq=spec))
    error = await cut_after(gateway, sent, route)
    # OpenAI's error object on /v1 (our type in `code`), the seed's on /stream
    assert error["code" if route.startswith("/v1") else "type"] == "upstream_error"
    assert message in error["message"]
    page = await no_leaks(gateway, mock)
    assert failures(page, reason) == 1
    assert page.value("modelrouter_provider_state", provider="groq") == 2  # blacklisted


async def test_upstream_that_never_closes_a_stream_is_finished_at_its_end_marker(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="hold_open=1"))
    started = time.monotonic()
    await streamed_whole(gateway)
    assert time.monotonic() - started < 1.5  # not PROVIDER_TIMEOUT, not the upstream's hold
    page = await no_leaks(gateway, mock)  # the held connection is closed, not pooled
    assert page.value("modelrouter_provider_success_total", provider="groq") == 1


async def test_every_provider_down_answers_within_the_deadline_after_one_attempt_each(
    mock: MockProcess, gateways: Gateways
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    env = fault_env(mock, GROQ_BASE_URL=closed, OPENROUTER_BASE_URL=closed)
    gateway = await gateways(env | {"MAX_OPERATION_TIMEOUT": "5"})
    started = time.monotonic()
    code, body = await chat(gateway.url)
    assert code == 502
    error = body["error"]
    assert error["type"] == "upstream_error"
    assert "groq" in error["message"]
    assert "openrouter" in error["message"]
    assert time.monotonic() - started < 5
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1
    assert failures(page, "connect_error", "openrouter") == 1
    # The next request finds both blacklisted: one forced attempt (the earliest to return),
    # not a loop, and an answer at once.
    started = time.monotonic()
    code, body = await chat(gateway.url)
    assert code == 502
    assert time.monotonic() - started < 5
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_provider_failures_total") == 3
